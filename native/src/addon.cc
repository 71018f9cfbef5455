// ecnet_native: module entry and the free functions of the binding (see src/bpf/native.ts for the contract).
#include <cerrno>

#include <unistd.h>

#include "common.h"
#include "ecnet.h"
#include "fdpass.h"
#include "link.h"
#include "map.h"
#include "object.h"
#include "splicer.h"

namespace ecnet {

namespace {

Napi::Value OpenObject(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  std::string path = ArgString(info, 0, "object_open", "path");
  std::string op = "object_open " + path;
  std::string pinRoot = ArgString(info, 1, op, "pinRoot");
  auto opts = ZeroOpts<struct bpf_object_open_opts>();
  opts.pin_root_path = pinRoot.empty() ? nullptr : pinRoot.c_str();
  LogCapture log;
  errno = 0;
  struct bpf_object* obj = bpf_object__open_file(path.c_str(), &opts);
  if (!obj) {
    int err = ErrOf(static_cast<int>(libbpf_get_error(obj)));
    std::string tail = log.Tail(4096);
    ThrowErrno(env, op, err, tail.empty() ? std::string() : "\nlibbpf log:\n" + tail);
  }
  return Object::Create(env, obj, path);
}

Napi::Value OpenPinnedMap(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  std::string path = ArgString(info, 0, "map_open_pinned", "path");
  std::string op = "map_open_pinned " + path;
  int fd = bpf_obj_get(path.c_str());
  if (fd < 0) ThrowErrno(env, op, ErrOf(fd));
  return Map::Create(env, fd, op);
}

Napi::Value OpenMapById(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  uint32_t id = ArgU32(info, 0, "map_get_fd_by_id", "id");
  std::string op = "map_get_fd_by_id " + std::to_string(id);
  int fd = bpf_map_get_fd_by_id(id);
  if (fd < 0) ThrowErrno(env, op, ErrOf(fd));
  return Map::Create(env, fd, op);
}

Napi::Value OpenPinnedLink(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  std::string path = ArgString(info, 0, "link_open_pinned", "path");
  std::string op = "link_open_pinned " + path;
  LogCapture log;  // keeps libbpf's "failed to open link" warning off stderr
  errno = 0;
  struct bpf_link* link = bpf_link__open(path.c_str());
  if (!link) ThrowErrno(env, op, ErrOf(static_cast<int>(libbpf_get_error(link))));
  std::string kind = BpfFdKind(bpf_link__fd(link));
  if (!kind.empty() && kind != "bpf_link" && kind != "bpf-link") {  // the name changed across kernels
    ReleaseLink(link);  // do not unpin/detach anything: just drop the fd
    ThrowErrno(env, op, EINVAL, "not a link (" + kind + ")");
  }
  return Link::Create(env, link, path);
}

Napi::Value ProgramInfoById(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  uint32_t id = ArgU32(info, 0, "prog_get_fd_by_id", "id");
  std::string op = "prog_info id " + std::to_string(id);
  FdGuard fd(bpf_prog_get_fd_by_id(id));
  if (fd.get() < 0) ThrowErrno(env, "prog_get_fd_by_id " + std::to_string(id), ErrOf(fd.get()));
  return ProgInfoOf(env, fd.get(), op);
}

Napi::Value StructSizes(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Napi::Object out = Napi::Object::New(env);
  out.Set("svc_key", static_cast<uint32_t>(sizeof(struct ecnet_svc_key)));
  out.Set("svc_value", static_cast<uint32_t>(sizeof(struct ecnet_svc_value)));
  out.Set("origdst", static_cast<uint32_t>(sizeof(struct ecnet_origdst)));
  out.Set("conn_key", static_cast<uint32_t>(sizeof(struct ecnet_conn_key)));
  out.Set("conn_dst", static_cast<uint32_t>(sizeof(struct ecnet_conn_dst)));
  out.Set("config", static_cast<uint32_t>(sizeof(struct ecnet_config)));
  return out;
}

Napi::Value PossibleCpus(const Napi::CallbackInfo& info) {
  int n = libbpf_num_possible_cpus();
  if (n <= 0) ThrowErrno(info.Env(), "num_possible_cpus", ErrOf(n));
  return Napi::Number::New(info.Env(), n);
}

Napi::Value LibbpfVersion(const Napi::CallbackInfo& info) {
  return Napi::String::New(info.Env(),
                           std::to_string(libbpf_major_version()) + "." + std::to_string(libbpf_minor_version()));
}

void SetErrorClass(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (!info[0].IsFunction()) ThrowErrno(env, "set_error_class", EINVAL, "argument must be a constructor");
  Data(env).errorClass = Napi::Persistent(info[0].As<Napi::Function>());
}

}  // namespace

Napi::Object InitModule(Napi::Env env, Napi::Object exports) {
  InstallLibbpfPrint();
  auto* data = new AddonData();
  env.SetInstanceData<AddonData>(data);  // deleted with the environment
  data->objectCtor = Napi::Persistent(Object::Init(env));
  data->linkCtor = Napi::Persistent(Link::Init(env));
  data->mapCtor = Napi::Persistent(Map::Init(env));
  data->splicerCtor = Napi::Persistent(Splicer::Init(env));

  exports.Set("Splicer", data->splicerCtor.Value());
  InitFdPass(env, exports);
  exports.Set("openObject", Napi::Function::New<OpenObject>(env, "openObject"));
  exports.Set("openPinnedMap", Napi::Function::New<OpenPinnedMap>(env, "openPinnedMap"));
  exports.Set("openMapById", Napi::Function::New<OpenMapById>(env, "openMapById"));
  exports.Set("openPinnedLink", Napi::Function::New<OpenPinnedLink>(env, "openPinnedLink"));
  exports.Set("programInfoById", Napi::Function::New<ProgramInfoById>(env, "programInfoById"));
  exports.Set("structSizes", Napi::Function::New<StructSizes>(env, "structSizes"));
  exports.Set("possibleCpus", Napi::Function::New<PossibleCpus>(env, "possibleCpus"));
  exports.Set("libbpfVersion", Napi::Function::New<LibbpfVersion>(env, "libbpfVersion"));
  exports.Set("setErrorClass", Napi::Function::New<SetErrorClass>(env, "setErrorClass"));
  return exports;
}

}  // namespace ecnet

static Napi::Object InitEcnetNative(Napi::Env env, Napi::Object exports) { return ecnet::InitModule(env, exports); }

NODE_API_MODULE(ecnet_native, InitEcnetNative)
