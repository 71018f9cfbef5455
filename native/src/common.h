// Shared helpers of the addon: per-environment data, errors, libbpf log capture, argument checks.
#pragma once

#include <napi.h>

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <optional>
#include <string>
#include <vector>

#include <bpf/bpf.h>
#include <bpf/libbpf.h>

namespace ecnet {

// Kernel-internal errno some BPF commands return for unsupported operations (not in userspace errno.h).
constexpr int kENOTSUPP = 524;

// Per-environment (main thread or worker) state, set with Env::SetInstanceData.
struct AddonData {
  Napi::FunctionReference errorClass;  // set by setErrorClass; empty until then
  Napi::FunctionReference objectCtor;
  Napi::FunctionReference linkCtor;
  Napi::FunctionReference mapCtor;
  Napi::FunctionReference splicerCtor;
};

AddonData& Data(Napi::Env env);

// Throws `new ErrorClass(message, { op, errno })` (or a plain Error with op/errno properties when no class was
// registered). `err` may be negative (libbpf style) or positive. `detail` is appended to strerror(err).
// `applied`, when given, is set as an extra property (updateBatch).
[[noreturn]] void ThrowErrno(Napi::Env env, const std::string& op, int err, const std::string& detail = {},
                             std::optional<uint32_t> applied = std::nullopt);

// Positive errno of the last libbpf call: `ret` when it is a negative error, else errno (EIO if unset).
int ErrOf(int ret);

// While alive, libbpf's WARN/INFO output on this thread is appended (bounded) to the capture.
class LogCapture {
 public:
  LogCapture();
  ~LogCapture();
  LogCapture(const LogCapture&) = delete;
  LogCapture& operator=(const LogCapture&) = delete;
  void Append(const char* s, size_t n);
  // The last `max` bytes, starting at a line boundary when possible.
  std::string Tail(size_t max) const;

 private:
  std::string buf_;
  LogCapture* prev_;
};

// Installs the libbpf print callback (once per process).
void InstallLibbpfPrint();

// CLOCK_MONOTONIC in milliseconds.
int64_t NowMs();
// Closes `fd` if open and marks it closed (-1).
void CloseFd(int& fd);
// The pending error of a socket (SO_ERROR), or the errno of asking for it.
int SocketError(int fd);
// A Buffer holding a copy of n bytes at p.
Napi::Buffer<uint8_t> BufferOf(Napi::Env env, const uint8_t* p, size_t n);

// Closes an fd on scope exit.
class FdGuard {
 public:
  explicit FdGuard(int fd) : fd_(fd) {}
  ~FdGuard();
  FdGuard(const FdGuard&) = delete;
  FdGuard& operator=(const FdGuard&) = delete;
  int get() const { return fd_; }
  int release() {
    int fd = fd_;
    fd_ = -1;
    return fd;
  }

 private:
  int fd_;
};

// A byte view of a Buffer/Uint8Array argument, valid for the duration of the call.
struct Bytes {
  const uint8_t* data;
  size_t size;
};

// Argument checks: each throws EINVAL with `op` on a wrong type or value.
std::string ArgString(const Napi::CallbackInfo& info, size_t i, const std::string& op, const char* what);
uint32_t ArgU32(const Napi::CallbackInfo& info, size_t i, const std::string& op, const char* what);
uint64_t ArgU64(const Napi::CallbackInfo& info, size_t i, const std::string& op, const char* what);
Bytes ArgBytes(const Napi::CallbackInfo& info, size_t i, const std::string& op, const char* what);
// Same, and the byte length must be exactly `expected`.
Bytes ArgBytes(const Napi::CallbackInfo& info, size_t i, const std::string& op, const char* what, size_t expected);

// Kernel info of a program fd: {id, name, tag, type, mapIds}.
Napi::Object ProgInfoOf(Napi::Env env, int progFd, const std::string& op);

// The kernel object type behind an fd ("bpf-map", "bpf-prog", "bpf_link"), from /proc/self/fd.
std::string BpfFdKind(int fd);

// Options structs of libbpf carry their own size; LIBBPF_OPTS uses C-only syntax.
template <typename T>
T ZeroOpts() {
  T opts;
  std::memset(&opts, 0, sizeof(opts));
  opts.sz = sizeof(opts);
  return opts;
}

}  // namespace ecnet
