#include "link.h"

#include <unistd.h>

namespace ecnet {

namespace {

const napi_type_tag kLinkTag = {0x6563'6e65'745f'6c69ULL, 0x6e6b'2d74'6167'0001ULL};

struct LinkInit {
  struct bpf_link* link;
  std::string desc;
  bool taken;
};

}  // namespace

// (bpf_link__destroy alone would call link->detach, which for fd-based links is close(fd) but for others may
// be more; a disconnected link's destroy frees the struct and leaves the fd open, so it is closed here.)
void ReleaseLink(struct bpf_link* link) {
  int fd = bpf_link__fd(link);
  bpf_link__disconnect(link);
  bpf_link__destroy(link);
  if (fd >= 0) close(fd);
}

Napi::Function Link::Init(Napi::Env env) {
  return DefineClass(env, "Link",
                     {
                         InstanceMethod<&Link::Info>("info"),
                         InstanceMethod<&Link::Pin>("pin"),
                         InstanceMethod<&Link::Unpin>("unpin"),
                         InstanceMethod<&Link::Detach>("detach"),
                         InstanceMethod<&Link::Close>("close"),
                     });
}

Napi::Object Link::Create(Napi::Env env, struct bpf_link* link, const std::string& desc) {
  LinkInit init{link, desc, false};
  try {
    return Data(env).linkCtor.New({Napi::External<LinkInit>::New(env, &init)});
  } catch (...) {
    if (!init.taken) ReleaseLink(link);
    throw;
  }
}

Link* Link::FromValue(Napi::Value value) {
  if (!value.IsObject()) return nullptr;
  Napi::Object obj = value.As<Napi::Object>();
  if (!obj.CheckTypeTag(&kLinkTag)) return nullptr;
  return Link::Unwrap(obj);
}

Link::Link(const Napi::CallbackInfo& info) : Napi::ObjectWrap<Link>(info) {
  if (info.Length() != 1 || !info[0].IsExternal())
    ThrowErrno(info.Env(), "new Link", EINVAL, "links come from openPinnedLink() or attachCgroup()");
  LinkInit* init = info[0].As<Napi::External<LinkInit>>().Data();
  link_ = init->link;
  desc_ = init->desc;
  init->taken = true;
  info.This().As<Napi::Object>().TypeTag(&kLinkTag);
}

Link::~Link() { Release(); }

void Link::Release() {
  if (link_) {
    ReleaseLink(link_);
    link_ = nullptr;
  }
}

struct bpf_link* Link::Need(Napi::Env env, const std::string& op) const {
  if (!link_) ThrowErrno(env, op, EBADF, "link handle is closed");
  return link_;
}

Napi::Value Link::Info(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  std::string op = "link_info " + desc_;
  struct bpf_link* link = Need(env, op);
  struct bpf_link_info li;
  std::memset(&li, 0, sizeof(li));
  __u32 len = sizeof(li);
  int ret = bpf_obj_get_info_by_fd(bpf_link__fd(link), &li, &len);
  if (ret) ThrowErrno(env, op, ErrOf(ret));
  bool cgroup = li.type == BPF_LINK_TYPE_CGROUP;
  Napi::Object out = Napi::Object::New(env);
  out.Set("id", li.id);
  out.Set("progId", li.prog_id);
  out.Set("type", li.type);
  out.Set("cgroupId", static_cast<double>(cgroup ? li.cgroup.cgroup_id : 0));
  out.Set("attachType", cgroup ? li.cgroup.attach_type : 0);
  return out;
}

void Link::Pin(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  std::string path = ArgString(info, 0, "link_pin " + desc_, "path");
  std::string op = "link_pin " + path;
  struct bpf_link* link = Need(env, op);
  LogCapture log;
  int ret = bpf_link__pin(link, path.c_str());
  if (ret) {
    int err = ErrOf(ret);
    std::string detail;
    if (err == EBUSY && bpf_link__pin_path(link))
      detail = std::string("already pinned at ") + bpf_link__pin_path(link);
    else if (std::string tail = log.Tail(1024); !tail.empty())
      detail = "\n" + tail;
    ThrowErrno(env, op, err, detail);
  }
}

void Link::Unpin(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  std::string op = "link_unpin " + desc_;
  struct bpf_link* link = Need(env, op);
  const char* pinPath = bpf_link__pin_path(link);
  if (!pinPath) ThrowErrno(env, op, EINVAL, "link is not pinned");
  op = std::string("link_unpin ") + pinPath;
  int ret = bpf_link__unpin(link);
  if (ret) ThrowErrno(env, op, ErrOf(ret));
}

void Link::Detach(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  std::string op = "link_detach " + desc_;
  struct bpf_link* link = Need(env, op);
  int ret = bpf_link__detach(link);
  if (ret) ThrowErrno(env, op, ErrOf(ret));
}

void Link::Close(const Napi::CallbackInfo&) { Release(); }

}  // namespace ecnet
