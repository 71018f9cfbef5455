#include "object.h"

#include <fcntl.h>
#include <unistd.h>

#include "link.h"

namespace ecnet {

namespace {

// How much of the captured libbpf log (verifier output) an open/load error carries.
constexpr size_t kLogTail = 4096;

struct ObjectInit {
  struct bpf_object* obj;
  std::string path;
  bool taken;
};

std::string WithLog(const LogCapture& log) {
  std::string tail = log.Tail(kLogTail);
  return tail.empty() ? std::string() : "\nlibbpf log:\n" + tail;
}

}  // namespace

Napi::Function Object::Init(Napi::Env env) {
  return DefineClass(env, "Object",
                     {
                         InstanceMethod<&Object::Programs>("programs"),
                         InstanceMethod<&Object::Maps>("maps"),
                         InstanceMethod<&Object::SetMaxEntries>("setMaxEntries"),
                         InstanceMethod<&Object::SetInitialValue>("setInitialValue"),
                         InstanceMethod<&Object::Load>("load"),
                         InstanceMethod<&Object::ProgramInfo>("programInfo"),
                         InstanceMethod<&Object::AttachCgroup>("attachCgroup"),
                         InstanceMethod<&Object::UpdateLink>("updateLink"),
                         InstanceMethod<&Object::Close>("close"),
                     });
}

Napi::Object Object::Create(Napi::Env env, struct bpf_object* obj, const std::string& path) {
  ObjectInit init{obj, path, false};
  try {
    return Data(env).objectCtor.New({Napi::External<ObjectInit>::New(env, &init)});
  } catch (...) {
    if (!init.taken) bpf_object__close(obj);
    throw;
  }
}

Object::Object(const Napi::CallbackInfo& info) : Napi::ObjectWrap<Object>(info) {
  if (info.Length() != 1 || !info[0].IsExternal())
    ThrowErrno(info.Env(), "new Object", EINVAL, "objects come from openObject()");
  ObjectInit* init = info[0].As<Napi::External<ObjectInit>>().Data();
  obj_ = init->obj;
  path_ = init->path;
  init->taken = true;
}

Object::~Object() {
  if (obj_) bpf_object__close(obj_);
}

struct bpf_object* Object::Need(Napi::Env env, const std::string& op) const {
  if (!obj_) ThrowErrno(env, op, EBADF, "object " + path_ + " is closed");
  return obj_;
}

struct bpf_map* Object::FindMap(Napi::Env env, const std::string& name, const std::string& op) const {
  struct bpf_object* obj = Need(env, op);
  // libbpf 1.x matches ".rodata"-style names against the internal map's real (section) name, and other
  // names against bpf_map__name (e.g. "x.rodata"). Fall back to a suffix match for internal maps anyway.
  struct bpf_map* map = bpf_object__find_map_by_name(obj, name.c_str());
  if (!map && !name.empty() && name[0] == '.') {
    struct bpf_map* pos;
    bpf_object__for_each_map(pos, obj) {
      std::string n = bpf_map__name(pos);
      if (n.size() >= name.size() && n.compare(n.size() - name.size(), name.size(), name) == 0) {
        map = pos;
        break;
      }
    }
  }
  if (!map) ThrowErrno(env, op, ENOENT, "no map '" + name + "' in " + path_);
  return map;
}

struct bpf_program* Object::FindProgram(Napi::Env env, const std::string& name, const std::string& op) const {
  struct bpf_object* obj = Need(env, op);
  struct bpf_program* prog = bpf_object__find_program_by_name(obj, name.c_str());
  if (!prog) ThrowErrno(env, op, ENOENT, "no program '" + name + "' in " + path_);
  return prog;
}

Napi::Value Object::Programs(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  struct bpf_object* obj = Need(env, "object_programs " + path_);
  Napi::Array out = Napi::Array::New(env);
  uint32_t i = 0;
  struct bpf_program* prog;
  bpf_object__for_each_program(prog, obj) {
    const char* attach = libbpf_bpf_attach_type_str(bpf_program__expected_attach_type(prog));
    const char* section = bpf_program__section_name(prog);
    Napi::Object p = Napi::Object::New(env);
    p.Set("name", bpf_program__name(prog));
    p.Set("section", section ? section : "");
    p.Set("attachType", attach ? attach : "");
    out.Set(i++, p);
  }
  return out;
}

Napi::Value Object::Maps(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  struct bpf_object* obj = Need(env, "object_maps " + path_);
  Napi::Array out = Napi::Array::New(env);
  uint32_t i = 0;
  struct bpf_map* map;
  bpf_object__for_each_map(map, obj) {
    Napi::Object m = Napi::Object::New(env);
    m.Set("name", bpf_map__name(map));
    m.Set("keySize", bpf_map__key_size(map));
    m.Set("valueSize", bpf_map__value_size(map));
    m.Set("maxEntries", bpf_map__max_entries(map));
    m.Set("type", static_cast<uint32_t>(bpf_map__type(map)));
    out.Set(i++, m);
  }
  return out;
}

void Object::SetMaxEntries(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  std::string name = ArgString(info, 0, "set_max_entries " + path_, "map");
  std::string op = "set_max_entries " + name;
  uint32_t n = ArgU32(info, 1, op, "maxEntries");
  struct bpf_map* map = FindMap(env, name, op);
  if (bpf_map__fd(map) >= 0) ThrowErrno(env, op, EBUSY, "object already loaded");
  int ret = bpf_map__set_max_entries(map, n);
  if (ret) ThrowErrno(env, op, ErrOf(ret));
}

void Object::SetInitialValue(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  std::string name = ArgString(info, 0, "set_initial_value " + path_, "map");
  std::string op = "set_initial_value " + name;
  Bytes value = ArgBytes(info, 1, op, "value");
  struct bpf_map* map = FindMap(env, name, op);
  // libbpf 1.1 answers EINVAL after load; say EBUSY like setMaxEntries.
  if (bpf_map__fd(map) >= 0) ThrowErrno(env, op, EBUSY, "object already loaded");
  size_t expected = bpf_map__value_size(map);
  if (value.size != expected)
    ThrowErrno(env, op, EINVAL,
               "value must be " + std::to_string(expected) + " bytes, got " + std::to_string(value.size));
  int ret = bpf_map__set_initial_value(map, value.data, value.size);
  if (ret) ThrowErrno(env, op, ErrOf(ret));
}

void Object::Load(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  std::string op = "object_load " + path_;
  struct bpf_object* obj = Need(env, op);
  LogCapture log;
  int ret = bpf_object__load(obj);
  if (ret) ThrowErrno(env, op, ErrOf(ret), WithLog(log));
}

Napi::Value Object::ProgramInfo(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  std::string name = ArgString(info, 0, "program_info " + path_, "program");
  std::string op = "program_info " + name;
  struct bpf_program* prog = FindProgram(env, name, op);
  int fd = bpf_program__fd(prog);
  if (fd < 0) ThrowErrno(env, op, EINVAL, "program not loaded");
  return ProgInfoOf(env, fd, op);
}

Napi::Value Object::AttachCgroup(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  std::string name = ArgString(info, 0, "attach " + path_, "program");
  std::string cgroup = ArgString(info, 1, "attach " + name, "cgroupPath");
  std::string op = "attach " + name + " " + cgroup;
  struct bpf_program* prog = FindProgram(env, name, op);
  if (bpf_program__fd(prog) < 0) ThrowErrno(env, op, EINVAL, "program not loaded");
  FdGuard cg(open(cgroup.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (cg.get() < 0) ThrowErrno(env, op, errno, "cannot open cgroup directory");
  LogCapture log;
  errno = 0;
  struct bpf_link* link = bpf_program__attach_cgroup(prog, cg.get());
  if (!link) ThrowErrno(env, op, ErrOf(static_cast<int>(libbpf_get_error(link))));
  return Link::Create(env, link, name + " " + cgroup);
}

void Object::UpdateLink(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Link* link = Link::FromValue(info[0]);
  if (!link) ThrowErrno(env, "link_update " + path_, EINVAL, "first argument must be a Link");
  std::string name = ArgString(info, 1, "link_update " + link->Desc(), "program");
  std::string op = "link_update " + link->Desc() + " " + name;
  struct bpf_program* prog = FindProgram(env, name, op);
  if (bpf_program__fd(prog) < 0) ThrowErrno(env, op, EINVAL, "program not loaded");
  struct bpf_link* l = link->Need(env, op);
  int ret = bpf_link__update_program(l, prog);
  if (ret) ThrowErrno(env, op, ErrOf(ret));
}

void Object::Close(const Napi::CallbackInfo&) {
  if (obj_) {
    bpf_object__close(obj_);
    obj_ = nullptr;
  }
}

}  // namespace ecnet
