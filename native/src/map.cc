#include "map.h"

#include <algorithm>

#include <unistd.h>

namespace ecnet {

namespace {

struct MapInit {
  int fd;
  struct bpf_map_info info;
};

// First chunk of entries() per BPF_MAP_LOOKUP_BATCH call, and its ceiling when a hash bucket does not fit.
constexpr uint32_t kBatchChunk = 4096;
constexpr uint32_t kBatchChunkMax = 1U << 20;

bool IsPerCpu(uint32_t type) {
  switch (type) {
    case BPF_MAP_TYPE_PERCPU_HASH:
    case BPF_MAP_TYPE_PERCPU_ARRAY:
    case BPF_MAP_TYPE_LRU_PERCPU_HASH:
    case BPF_MAP_TYPE_PERCPU_CGROUP_STORAGE:
      return true;
    default:
      return false;
  }
}

// The kernel has no batch command (EINVAL from old kernels) or no batch op for this map type (ENOTSUPP).
bool BatchUnsupported(int err) { return err == EINVAL || err == kENOTSUPP || err == EOPNOTSUPP; }

std::string Sizes(const char* what, size_t got, uint32_t count, size_t each) {
  return std::string(what) + " must be " + std::to_string(count) + " x " + std::to_string(each) + " bytes, got " +
         std::to_string(got);
}

}  // namespace

Napi::Function Map::Init(Napi::Env env) {
  return DefineClass(env, "Map",
                     {
                         InstanceMethod<&Map::Info>("info"),
                         InstanceMethod<&Map::Lookup>("lookup"),
                         InstanceMethod<&Map::Update>("update"),
                         InstanceMethod<&Map::Delete>("delete"),
                         InstanceMethod<&Map::LookupAndDelete>("lookupAndDelete"),
                         InstanceMethod<&Map::Fd>("fd"),
                         InstanceMethod<&Map::Entries>("entries"),
                         InstanceMethod<&Map::UpdateBatch>("updateBatch"),
                         InstanceMethod<&Map::DeleteBatch>("deleteBatch"),
                         InstanceMethod<&Map::Close>("close"),
                     });
}

Napi::Object Map::Create(Napi::Env env, int fd, const std::string& op) {
  FdGuard guard(fd);
  std::string kind = BpfFdKind(fd);
  if (!kind.empty() && kind != "bpf-map") ThrowErrno(env, op, EINVAL, "not a map (" + kind + ")");
  MapInit init;
  std::memset(&init, 0, sizeof(init));
  init.fd = fd;
  __u32 len = sizeof(init.info);
  int ret = bpf_obj_get_info_by_fd(fd, &init.info, &len);
  if (ret) ThrowErrno(env, op, ErrOf(ret));
  Napi::Object obj = Data(env).mapCtor.New({Napi::External<MapInit>::New(env, &init)});
  guard.release();  // the constructor succeeded: the Map owns the fd
  return obj;
}

Map::Map(const Napi::CallbackInfo& info) : Napi::ObjectWrap<Map>(info) {
  std::memset(&info_, 0, sizeof(info_));
  if (info.Length() != 1 || !info[0].IsExternal())
    ThrowErrno(info.Env(), "new Map", EINVAL, "maps come from openPinnedMap() or openMapById()");
  MapInit* init = info[0].As<Napi::External<MapInit>>().Data();
  fd_ = init->fd;
  info_ = init->info;
}

Map::~Map() {
  if (fd_ >= 0) close(fd_);
}

void Map::Close(const Napi::CallbackInfo&) {
  if (fd_ >= 0) {
    close(fd_);
    fd_ = -1;
  }
}

std::string Map::Op(const char* verb) const {
  return std::string(verb) + " " + std::string(info_.name, strnlen(info_.name, sizeof(info_.name)));
}

int Map::Need(Napi::Env env, const std::string& op) const {
  if (fd_ < 0) ThrowErrno(env, op, EBADF, "map handle is closed");
  return fd_;
}

size_t Map::ValueBytes(Napi::Env env, const std::string& op) const {
  if (!IsPerCpu(info_.type)) return info_.value_size;
  int cpus = libbpf_num_possible_cpus();
  if (cpus <= 0) ThrowErrno(env, op, ErrOf(cpus), "cannot count possible CPUs");
  return ((static_cast<size_t>(info_.value_size) + 7) & ~static_cast<size_t>(7)) * static_cast<size_t>(cpus);
}

// The open descriptor, for a native user that dups it (the front); still owned here.
Napi::Value Map::Fd(const Napi::CallbackInfo& info) {
  return Napi::Number::New(info.Env(), Need(info.Env(), Op("fd of")));
}

Napi::Value Map::Info(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Need(env, Op("map_info"));
  Napi::Object out = Napi::Object::New(env);
  out.Set("id", info_.id);
  out.Set("name", std::string(info_.name, strnlen(info_.name, sizeof(info_.name))));
  out.Set("type", info_.type);
  out.Set("keySize", info_.key_size);
  out.Set("valueSize", info_.value_size);
  out.Set("maxEntries", info_.max_entries);
  out.Set("flags", info_.map_flags);
  return out;
}

Napi::Value Map::Lookup(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  std::string op = Op("map_lookup");
  int fd = Need(env, op);
  Bytes key = ArgBytes(info, 0, op, "key", info_.key_size);
  Napi::Buffer<uint8_t> value = Napi::Buffer<uint8_t>::New(env, ValueBytes(env, op));
  int ret = bpf_map_lookup_elem(fd, key.data, value.Data());
  if (ret) {
    int err = ErrOf(ret);
    if (err == ENOENT) return env.Null();
    ThrowErrno(env, op, err);
  }
  return value;
}

void Map::Update(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  std::string op = Op("map_update");
  int fd = Need(env, op);
  Bytes key = ArgBytes(info, 0, op, "key", info_.key_size);
  Bytes value = ArgBytes(info, 1, op, "value", ValueBytes(env, op));
  uint64_t flags = ArgU64(info, 2, op, "flags");
  int ret = bpf_map_update_elem(fd, key.data, value.data, flags);
  if (ret) ThrowErrno(env, op, ErrOf(ret));
}

Napi::Value Map::Delete(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  std::string op = Op("map_delete");
  int fd = Need(env, op);
  Bytes key = ArgBytes(info, 0, op, "key", info_.key_size);
  int ret = bpf_map_delete_elem(fd, key.data);
  if (ret) {
    int err = ErrOf(ret);
    if (err == ENOENT) return Napi::Boolean::New(env, false);
    ThrowErrno(env, op, err);
  }
  return Napi::Boolean::New(env, true);
}

Napi::Value Map::LookupAndDelete(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  std::string op = Op("map_lookup_and_delete");
  int fd = Need(env, op);
  Bytes key = ArgBytes(info, 0, op, "key", info_.key_size);
  Napi::Buffer<uint8_t> value = Napi::Buffer<uint8_t>::New(env, ValueBytes(env, op));
  int ret = bpf_map_lookup_and_delete_elem(fd, key.data, value.Data());
  if (ret) {
    int err = ErrOf(ret);
    if (err == ENOENT) return env.Null();
    // Hash maps have the atomic command only since Linux 5.14: do what it does in two steps.
    if (err != EINVAL && err != kENOTSUPP && err != EOPNOTSUPP) ThrowErrno(env, op, err);
    ret = bpf_map_lookup_elem(fd, key.data, value.Data());
    if (ret) {
      err = ErrOf(ret);
      if (err == ENOENT) return env.Null();
      ThrowErrno(env, op, err);
    }
    ret = bpf_map_delete_elem(fd, key.data);
    if (ret && ErrOf(ret) != ENOENT) ThrowErrno(env, op, ErrOf(ret));
  }
  return value;
}

// Walks the map with BPF_MAP_GET_NEXT_KEY + lookup (kernels or map types without batch lookup).
bool Map::EntriesByNextKey(Napi::Env env, int fd, size_t valueBytes, std::vector<uint8_t>& keys,
                           std::vector<uint8_t>& values, size_t& count) {
  size_t ks = info_.key_size;
  std::vector<uint8_t> cur(std::max<size_t>(ks, 1)), next(std::max<size_t>(ks, 1));
  bool first = true;
  // Bound the walk: a hash map restarts from its first key when the current one is deleted meanwhile.
  uint64_t budget = 4ULL * info_.max_entries + 64;
  keys.clear();
  values.clear();
  count = 0;
  for (;;) {
    int ret = bpf_map_get_next_key(fd, first ? nullptr : cur.data(), next.data());
    if (ret) {
      int err = ErrOf(ret);
      if (err == ENOENT) return true;
      ThrowErrno(env, Op("map_get_next_key"), err);
    }
    if (budget-- == 0) ThrowErrno(env, Op("map_get_next_key"), EAGAIN, "map changed too much while iterating");
    keys.resize((count + 1) * ks);
    values.resize((count + 1) * valueBytes);
    ret = bpf_map_lookup_elem(fd, next.data(), values.data() + count * valueBytes);
    if (ret == 0) {
      std::memcpy(keys.data() + count * ks, next.data(), ks);
      count++;
    } else if (ErrOf(ret) != ENOENT) {  // ENOENT: deleted since get_next_key
      ThrowErrno(env, Op("map_lookup"), ErrOf(ret));
    }
    std::swap(cur, next);
    first = false;
  }
}

Napi::Value Map::Entries(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  std::string op = Op("map_lookup_batch");
  int fd = Need(env, op);
  size_t ks = info_.key_size;
  size_t vs = ValueBytes(env, op);
  std::vector<uint8_t> keys, values;
  size_t count = 0;

  // Batch tokens: hash maps use a u32 bucket index, arrays a key.
  std::vector<uint8_t> inBatch(std::max<size_t>(ks, 8)), outBatch(std::max<size_t>(ks, 8));
  uint32_t chunk = std::clamp<uint32_t>(info_.max_entries, 1, kBatchChunk);
  bool first = true;
  bool fallback = false;
  auto opts = ZeroOpts<struct bpf_map_batch_opts>();
  for (;;) {
    keys.resize((count + chunk) * ks);
    values.resize((count + chunk) * vs);
    __u32 n = chunk;
    int ret = bpf_map_lookup_batch(fd, first ? nullptr : inBatch.data(), outBatch.data(), keys.data() + count * ks,
                                   values.data() + count * vs, &n, &opts);
    int err = ret ? ErrOf(ret) : 0;
    if (err != 0 && err != ENOENT) {
      if (err == ENOSPC && n == 0 && chunk < kBatchChunkMax) {  // one hash bucket holds more than `chunk`
        chunk *= 2;
        continue;
      }
      if (first && BatchUnsupported(err)) {
        fallback = true;
        break;
      }
      ThrowErrno(env, op, err);
    }
    count += n;
    first = false;
    if (err == ENOENT) break;  // end of map
    std::swap(inBatch, outBatch);
  }
  if (fallback) EntriesByNextKey(env, fd, vs, keys, values, count);

  Napi::Object out = Napi::Object::New(env);
  out.Set("keys", Napi::Buffer<uint8_t>::Copy(env, keys.data(), count * ks));
  out.Set("values", Napi::Buffer<uint8_t>::Copy(env, values.data(), count * vs));
  out.Set("count", static_cast<double>(count));
  return out;
}

Napi::Value Map::UpdateBatch(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  std::string op = Op("map_update_batch");
  int fd = Need(env, op);
  Bytes keys = ArgBytes(info, 0, op, "keys");
  Bytes values = ArgBytes(info, 1, op, "values");
  uint32_t count = ArgU32(info, 2, op, "count");
  uint64_t flags = ArgU64(info, 3, op, "flags");
  size_t ks = info_.key_size;
  size_t vs = ValueBytes(env, op);
  if (keys.size != count * ks) ThrowErrno(env, op, EINVAL, Sizes("keys", keys.size, count, ks));
  if (values.size != count * vs) ThrowErrno(env, op, EINVAL, Sizes("values", values.size, count, vs));
  if (count == 0) return Napi::Number::New(env, 0);

  // The kernel's batch update takes only BPF_F_LOCK in elem_flags (EINVAL for BPF_NOEXIST/BPF_EXIST), so
  // other flags, and kernels/map types without batch update, go element by element.
  bool perElement = (flags & ~static_cast<uint64_t>(BPF_F_LOCK)) != 0;
  if (!perElement) {
    auto opts = ZeroOpts<struct bpf_map_batch_opts>();
    opts.elem_flags = flags;
    __u32 n = count;
    int ret = bpf_map_update_batch(fd, keys.data, values.data, &n, &opts);
    if (ret == 0) return Napi::Number::New(env, count);
    int err = ErrOf(ret);
    // The kernel writes back how many it processed, always < count on error; when it fails before
    // processing (bad flags, no batch op), `n` is still our input count.
    if (n >= count) n = 0;
    if (!(n == 0 && BatchUnsupported(err))) ThrowErrno(env, op, err, "", n);
    // Unsupported, or EINVAL on the first element: per element gives the same error in that case.
  }
  for (uint32_t i = 0; i < count; i++) {
    int ret = bpf_map_update_elem(fd, keys.data + i * ks, values.data + i * vs, flags);
    if (ret) ThrowErrno(env, op, ErrOf(ret), "", i);
  }
  return Napi::Number::New(env, count);
}

Napi::Value Map::DeleteBatch(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  std::string op = Op("map_delete_batch");
  int fd = Need(env, op);
  Bytes keys = ArgBytes(info, 0, op, "keys");
  uint32_t count = ArgU32(info, 1, op, "count");
  size_t ks = info_.key_size;
  if (keys.size != count * ks) ThrowErrno(env, op, EINVAL, Sizes("keys", keys.size, count, ks));
  if (count == 0) return Napi::Number::New(env, 0);

  auto opts = ZeroOpts<struct bpf_map_batch_opts>();
  __u32 n = count;
  int ret = bpf_map_delete_batch(fd, keys.data, &n, &opts);
  if (ret == 0) return Napi::Number::New(env, count);
  int err = ErrOf(ret);
  if (n >= count) n = 0;  // not written back (see UpdateBatch)
  // The batch stops at the first absent key (ENOENT) with `n` deleted before it; an unsupported batch
  // deletes nothing. Either way, finish key by key, counting only keys that existed.
  if (!(err == ENOENT || (n == 0 && BatchUnsupported(err)))) ThrowErrno(env, op, err, "", n);
  uint32_t deleted = n;
  for (uint32_t i = n; i < count; i++) {
    ret = bpf_map_delete_elem(fd, keys.data + i * ks);
    if (ret == 0) {
      deleted++;
    } else if (ErrOf(ret) != ENOENT) {
      ThrowErrno(env, op, ErrOf(ret), "", deleted);
    }
  }
  return Napi::Number::New(env, deleted);
}

}  // namespace ecnet
