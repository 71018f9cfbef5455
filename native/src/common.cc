#include "common.h"

#include <cerrno>
#include <cmath>
#include <cstdarg>
#include <cstdio>
#include <cstdlib>
#include <vector>

#include <sys/socket.h>
#include <ctime>
#include <unistd.h>

namespace ecnet {

namespace {

// Bounds of the captured libbpf output (verifier logs can be megabytes; the end is what matters).
constexpr size_t kCaptureMax = 64 * 1024;
constexpr size_t kCaptureKeep = 32 * 1024;

thread_local LogCapture* tCapture = nullptr;
bool gDebug = false;  // ECNET_LIBBPF_DEBUG set: forward all libbpf output to stderr

std::string ErrnoMessage(int e) {
  if (e == kENOTSUPP) return "Operation not supported (ENOTSUPP)";
  char buf[256];
  buf[0] = '\0';
  libbpf_strerror(e, buf, sizeof(buf));
  if (buf[0] == '\0') return "errno " + std::to_string(e);
  return buf;
}

int LibbpfPrint(enum libbpf_print_level level, const char* fmt, va_list ap) {
  LogCapture* cap = tCapture;
  bool toStderr = gDebug;
  bool toCapture = cap != nullptr && level != LIBBPF_DEBUG;
  if (!toStderr && !toCapture) return 0;
  try {
    char small[2048];
    va_list copy;
    va_copy(copy, ap);
    int n = vsnprintf(small, sizeof(small), fmt, copy);
    va_end(copy);
    if (n < 0) return 0;
    const char* s = small;
    std::string big;
    if (static_cast<size_t>(n) >= sizeof(small)) {
      big.resize(static_cast<size_t>(n) + 1);
      vsnprintf(big.data(), big.size(), fmt, ap);
      s = big.data();
    }
    if (toStderr) fwrite(s, 1, static_cast<size_t>(n), stderr);
    if (toCapture) cap->Append(s, static_cast<size_t>(n));
  } catch (...) {
    // Never let an exception cross into C (allocation failure: drop the message).
  }
  return 0;
}

}  // namespace

AddonData& Data(Napi::Env env) { return *env.GetInstanceData<AddonData>(); }

void ThrowErrno(Napi::Env env, const std::string& op, int err, const std::string& detail,
                std::optional<uint32_t> applied) {
  int e = err < 0 ? -err : err;
  if (e == 0) e = EIO;
  std::string msg = ErrnoMessage(e);
  if (!detail.empty()) msg += detail[0] == '\n' ? detail : ": " + detail;

  AddonData& data = Data(env);
  Napi::Object error;
  if (!data.errorClass.IsEmpty()) {
    Napi::Object details = Napi::Object::New(env);
    details.Set("op", op);
    details.Set("errno", e);
    error = data.errorClass.New({Napi::String::New(env, msg), details});
  } else {
    error = Napi::Error::New(env, op + ": " + msg).Value();
    error.Set("op", op);
    error.Set("errno", e);
  }
  if (applied) error.Set("applied", *applied);
  throw Napi::Error(env, error);
}

int ErrOf(int ret) {
  if (ret < 0) return -ret;
  return errno != 0 ? errno : EIO;
}

LogCapture::LogCapture() : prev_(tCapture) { tCapture = this; }

LogCapture::~LogCapture() { tCapture = prev_; }

void LogCapture::Append(const char* s, size_t n) {
  if (n > kCaptureKeep) {
    s += n - kCaptureKeep;
    n = kCaptureKeep;
  }
  buf_.append(s, n);
  if (buf_.size() > kCaptureMax) buf_.erase(0, buf_.size() - kCaptureKeep);
}

std::string LogCapture::Tail(size_t max) const {
  size_t end = buf_.size();
  while (end > 0 && (buf_[end - 1] == '\n' || buf_[end - 1] == ' ')) end--;
  if (end <= max) return buf_.substr(0, end);
  size_t start = end - max;
  size_t nl = buf_.find('\n', start);
  if (nl != std::string::npos && nl + 1 < end) start = nl + 1;
  return "...\n" + buf_.substr(start, end - start);
}

void InstallLibbpfPrint() {
  static bool installed = false;
  if (installed) return;
  installed = true;
  gDebug = std::getenv("ECNET_LIBBPF_DEBUG") != nullptr;
  libbpf_set_print(LibbpfPrint);
}

FdGuard::~FdGuard() {
  if (fd_ >= 0) close(fd_);
}

std::string ArgString(const Napi::CallbackInfo& info, size_t i, const std::string& op, const char* what) {
  Napi::Value v = info[i];
  if (!v.IsString()) ThrowErrno(info.Env(), op, EINVAL, std::string(what) + " must be a string");
  std::string s = v.As<Napi::String>().Utf8Value();
  if (s.find('\0') != std::string::npos)
    ThrowErrno(info.Env(), op, EINVAL, std::string(what) + " contains a NUL character");
  return s;
}

static double ArgInteger(const Napi::CallbackInfo& info, size_t i, const std::string& op, const char* what,
                         double max) {
  Napi::Value v = info[i];
  if (!v.IsNumber()) ThrowErrno(info.Env(), op, EINVAL, std::string(what) + " must be a number");
  double d = v.As<Napi::Number>().DoubleValue();
  if (!(d >= 0 && d <= max && std::floor(d) == d))
    ThrowErrno(info.Env(), op, EINVAL, std::string(what) + " must be an integer in [0, " +
                                           std::to_string(static_cast<uint64_t>(max)) + "]");
  return d;
}

uint32_t ArgU32(const Napi::CallbackInfo& info, size_t i, const std::string& op, const char* what) {
  return static_cast<uint32_t>(ArgInteger(info, i, op, what, 4294967295.0));
}

uint64_t ArgU64(const Napi::CallbackInfo& info, size_t i, const std::string& op, const char* what) {
  return static_cast<uint64_t>(ArgInteger(info, i, op, what, 9007199254740991.0));
}

Bytes ArgBytes(const Napi::CallbackInfo& info, size_t i, const std::string& op, const char* what) {
  Napi::Value v = info[i];
  if (!v.IsTypedArray() || v.As<Napi::TypedArray>().TypedArrayType() != napi_uint8_array)
    ThrowErrno(info.Env(), op, EINVAL, std::string(what) + " must be a Buffer or Uint8Array");
  Napi::Uint8Array a = v.As<Napi::Uint8Array>();
  return Bytes{a.Data(), a.ByteLength()};
}

Bytes ArgBytes(const Napi::CallbackInfo& info, size_t i, const std::string& op, const char* what,
               size_t expected) {
  Bytes b = ArgBytes(info, i, op, what);
  if (b.size != expected)
    ThrowErrno(info.Env(), op, EINVAL,
               std::string(what) + " must be " + std::to_string(expected) + " bytes, got " + std::to_string(b.size));
  return b;
}

Napi::Object ProgInfoOf(Napi::Env env, int progFd, const std::string& op) {
  struct bpf_prog_info pi;
  std::memset(&pi, 0, sizeof(pi));
  __u32 len = sizeof(pi);
  int ret = bpf_obj_get_info_by_fd(progFd, &pi, &len);
  if (ret) ThrowErrno(env, op, ErrOf(ret));

  std::vector<__u32> mapIds(pi.nr_map_ids);
  if (!mapIds.empty()) {
    __u32 wanted = static_cast<__u32>(mapIds.size());
    std::memset(&pi, 0, sizeof(pi));
    pi.nr_map_ids = wanted;
    pi.map_ids = static_cast<__u64>(reinterpret_cast<uintptr_t>(mapIds.data()));
    len = sizeof(pi);
    ret = bpf_obj_get_info_by_fd(progFd, &pi, &len);
    if (ret) ThrowErrno(env, op, ErrOf(ret));
    if (pi.nr_map_ids < wanted) mapIds.resize(pi.nr_map_ids);
  }

  static const char hex[] = "0123456789abcdef";
  std::string tag;
  for (size_t i = 0; i < sizeof(pi.tag); i++) {
    tag += hex[pi.tag[i] >> 4];
    tag += hex[pi.tag[i] & 0xf];
  }

  Napi::Object out = Napi::Object::New(env);
  out.Set("id", pi.id);
  out.Set("name", std::string(pi.name, strnlen(pi.name, sizeof(pi.name))));
  out.Set("tag", tag);
  out.Set("type", pi.type);
  Napi::Array ids = Napi::Array::New(env, mapIds.size());
  for (size_t i = 0; i < mapIds.size(); i++) ids.Set(static_cast<uint32_t>(i), mapIds[i]);
  out.Set("mapIds", ids);
  return out;
}

std::string BpfFdKind(int fd) {
  char path[64];
  char target[128];
  std::snprintf(path, sizeof(path), "/proc/self/fd/%d", fd);
  ssize_t n = readlink(path, target, sizeof(target) - 1);
  if (n < 0) return {};
  target[n] = '\0';
  static const char prefix[] = "anon_inode:";
  if (std::strncmp(target, prefix, sizeof(prefix) - 1) != 0) return target;
  return target + sizeof(prefix) - 1;
}

int64_t NowMs() {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<int64_t>(ts.tv_sec) * 1000 + ts.tv_nsec / 1000000;
}

void CloseFd(int& fd) {
  if (fd >= 0) close(fd);
  fd = -1;
}

int SocketError(int fd) {
  int err = 0;
  socklen_t len = sizeof(err);
  return getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) < 0 ? errno : err;
}

Napi::Buffer<uint8_t> BufferOf(Napi::Env env, const uint8_t* p, size_t n) {
  return Napi::Buffer<uint8_t>::Copy(env, n ? p : reinterpret_cast<const uint8_t*>(""), n);
}

}  // namespace ecnet
