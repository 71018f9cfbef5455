// Descriptor passing between two agents on one node (the hand-over of an upgrade): a unix stream socket whose
// messages are a 4-byte big-endian length and the bytes, each carrying descriptors (SCM_RIGHTS) with it. Calls
// block for at most their timeout (poll); the hand-over is short and happens once per process.
#include "fdpass.h"

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <string>
#include <vector>

#include <fcntl.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "common.h"

namespace ecnet {

namespace {

constexpr size_t kMaxFds = 250;              // per message (SCM_MAX_FD is 253)
constexpr size_t kMaxMessage = 64u << 20;    // a message larger than this is refused

sockaddr_un AddressOf(Napi::Env env, const std::string& op, const std::string& path) {
  sockaddr_un a = {};
  a.sun_family = AF_UNIX;
  if (path.empty() || path.size() >= sizeof(a.sun_path)) ThrowErrno(env, op, ENAMETOOLONG, path);
  std::memcpy(a.sun_path, path.data(), path.size());
  return a;
}

int64_t Now() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

// Waits for `events` on fd until the deadline; 0, or ETIMEDOUT / the poll error.
int WaitFor(int fd, short events, int64_t deadline) {
  for (;;) {
    int64_t left = std::max<int64_t>(0, deadline - Now());  // 0: one look, no wait
    pollfd p = {fd, events, 0};
    int n = poll(&p, 1, static_cast<int>(left));
    if (n > 0) return 0;
    if (n < 0 && errno != EINTR) return errno;
    if (n == 0 && deadline - Now() <= 0) return ETIMEDOUT;
  }
}

Napi::Value Listen(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  std::string path = ArgString(info, 0, "handover_listen", "path");
  std::string op = "handover_listen " + path;
  sockaddr_un a = AddressOf(env, op, path);
  FdGuard fd(socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
  if (fd.get() < 0) ThrowErrno(env, op, errno);
  // A socket left by a process that is gone is replaced; the caller knows no live one answers there.
  struct stat st;
  if (lstat(path.c_str(), &st) == 0 && S_ISSOCK(st.st_mode)) unlink(path.c_str());
  if (bind(fd.get(), reinterpret_cast<sockaddr*>(&a), sizeof(a)) < 0) ThrowErrno(env, op, errno);
  chmod(path.c_str(), 0600);
  if (listen(fd.get(), 4) < 0) ThrowErrno(env, op, errno);
  return Napi::Number::New(env, fd.release());
}

// A connection waiting on a listening socket, or -1 when none is.
Napi::Value Accept(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int lfd = static_cast<int>(ArgU32(info, 0, "handover_accept", "fd"));
  int fd = accept4(lfd, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
  if (fd < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) ThrowErrno(env, "handover_accept", errno);
  return Napi::Number::New(env, fd);
}

Napi::Value Connect(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  std::string path = ArgString(info, 0, "handover_connect", "path");
  std::string op = "handover_connect " + path;
  sockaddr_un a = AddressOf(env, op, path);
  FdGuard fd(socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
  if (fd.get() < 0) ThrowErrno(env, op, errno);
  if (connect(fd.get(), reinterpret_cast<sockaddr*>(&a), sizeof(a)) < 0) ThrowErrno(env, op, errno);
  int fl = fcntl(fd.get(), F_GETFL);
  if (fl < 0 || fcntl(fd.get(), F_SETFL, fl | O_NONBLOCK) < 0) ThrowErrno(env, op, errno);
  return Napi::Number::New(env, fd.release());
}

// send(fd, bytes, fds, timeoutMs): one message, the descriptors with its first bytes.
void Send(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const std::string op = "handover_send";
  int fd = static_cast<int>(ArgU32(info, 0, op, "fd"));
  Bytes body = ArgBytes(info, 1, op, "bytes");
  if (info.Length() < 4 || !info[2].IsArray()) ThrowErrno(env, op, EINVAL, "arguments: fd, bytes, fds, timeoutMs");
  Napi::Array arr = info[2].As<Napi::Array>();
  if (arr.Length() > kMaxFds) ThrowErrno(env, op, EINVAL, "too many descriptors in one message");
  std::vector<int> fds;
  for (uint32_t i = 0; i < arr.Length(); i++) fds.push_back(arr.Get(i).As<Napi::Number>().Int32Value());
  int64_t deadline = Now() + ArgU32(info, 3, op, "timeoutMs");
  if (body.size > kMaxMessage) ThrowErrno(env, op, EMSGSIZE);
  std::string msg(4, '\0');
  uint32_t n = static_cast<uint32_t>(body.size);
  msg[0] = static_cast<char>(n >> 24);
  msg[1] = static_cast<char>(n >> 16);
  msg[2] = static_cast<char>(n >> 8);
  msg[3] = static_cast<char>(n);
  msg.append(reinterpret_cast<const char*>(body.data), body.size);
  size_t at = 0;
  bool fdsSent = fds.empty();
  std::vector<char> control(CMSG_SPACE(sizeof(int) * (fds.empty() ? 1 : fds.size())));
  while (at < msg.size()) {
    iovec iov = {&msg[at], msg.size() - at};
    msghdr m = {};
    m.msg_iov = &iov;
    m.msg_iovlen = 1;
    if (!fdsSent) {
      m.msg_control = control.data();
      m.msg_controllen = CMSG_SPACE(sizeof(int) * fds.size());
      cmsghdr* c = CMSG_FIRSTHDR(&m);
      c->cmsg_level = SOL_SOCKET;
      c->cmsg_type = SCM_RIGHTS;
      c->cmsg_len = CMSG_LEN(sizeof(int) * fds.size());
      std::memcpy(CMSG_DATA(c), fds.data(), sizeof(int) * fds.size());
    }
    ssize_t w = sendmsg(fd, &m, MSG_NOSIGNAL);
    if (w < 0) {
      if (errno == EINTR) continue;
      if (errno != EAGAIN) ThrowErrno(env, op, errno);
      if (int err = WaitFor(fd, POLLOUT, deadline)) ThrowErrno(env, op, err);
      continue;
    }
    fdsSent = true;
    at += static_cast<size_t>(w);
  }
}

// recv(fd, timeoutMs): {bytes, fds} of the next message, or null at the end of the stream (before a message).
Napi::Value Recv(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const std::string op = "handover_recv";
  int fd = static_cast<int>(ArgU32(info, 0, op, "fd"));
  int64_t deadline = Now() + ArgU32(info, 1, op, "timeoutMs");
  std::vector<int> fds;
  auto fail = [&](int err, const std::string& detail = {}) {
    for (int f : fds) close(f);
    ThrowErrno(env, op, err, detail);
  };
  // Reads exactly `want` bytes into buf, taking any descriptors that come with them; false at a clean end
  // before the first byte.
  auto readAll = [&](char* buf, size_t want, bool endOk) -> bool {
    size_t got = 0;
    while (got < want) {
      iovec iov = {buf + got, want - got};
      alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int) * kMaxFds)];
      msghdr m = {};
      m.msg_iov = &iov;
      m.msg_iovlen = 1;
      m.msg_control = control;
      m.msg_controllen = sizeof(control);
      ssize_t r = recvmsg(fd, &m, MSG_CMSG_CLOEXEC);
      if (r < 0) {
        if (errno == EINTR) continue;
        if (errno != EAGAIN) fail(errno);
        if (int err = WaitFor(fd, POLLIN, deadline)) fail(err);
        continue;
      }
      for (cmsghdr* c = CMSG_FIRSTHDR(&m); c; c = CMSG_NXTHDR(&m, c)) {
        if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS) continue;
        size_t count = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
        const int* p = reinterpret_cast<const int*>(CMSG_DATA(c));
        for (size_t i = 0; i < count; i++) fds.push_back(p[i]);
      }
      if (m.msg_flags & MSG_CTRUNC) fail(EMSGSIZE, "descriptors were truncated");
      if (r == 0) {
        if (endOk && got == 0) return false;
        fail(ECONNRESET, "the stream ended inside a message");
      }
      got += static_cast<size_t>(r);
    }
    return true;
  };
  char header[4];
  if (!readAll(header, 4, true)) return env.Null();
  uint32_t n = (static_cast<uint32_t>(static_cast<uint8_t>(header[0])) << 24) |
               (static_cast<uint32_t>(static_cast<uint8_t>(header[1])) << 16) |
               (static_cast<uint32_t>(static_cast<uint8_t>(header[2])) << 8) | static_cast<uint8_t>(header[3]);
  if (n > kMaxMessage) fail(EMSGSIZE);
  std::string body(n, '\0');
  if (n) readAll(&body[0], n, false);
  Napi::Object out = Napi::Object::New(env);
  out.Set("bytes", Napi::Buffer<uint8_t>::Copy(env, reinterpret_cast<const uint8_t*>(body.data()), body.size()));
  Napi::Array a = Napi::Array::New(env);
  for (size_t i = 0; i < fds.size(); i++) a.Set(static_cast<uint32_t>(i), fds[i]);
  out.Set("fds", a);
  return out;
}

// The uid of the process at the other end of a unix socket (SO_PEERCRED), as the kernel recorded it.
Napi::Value PeerUid(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd = static_cast<int>(ArgU32(info, 0, "handover_peer", "fd"));
  ucred cred = {};
  socklen_t len = sizeof(cred);
  if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) < 0) ThrowErrno(env, "handover_peer", errno);
  return Napi::Number::New(env, cred.uid);
}

Napi::Value Dup(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd = fcntl(static_cast<int>(ArgU32(info, 0, "dup", "fd")), F_DUPFD_CLOEXEC, 0);
  if (fd < 0) ThrowErrno(env, "dup", errno);
  return Napi::Number::New(env, fd);
}

// Whether the socket has something to read (a message, or its end) within timeoutMs.
Napi::Value Readable(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd = static_cast<int>(ArgU32(info, 0, "handover_readable", "fd"));
  int err = WaitFor(fd, POLLIN, Now() + ArgU32(info, 1, "handover_readable", "timeoutMs"));
  if (err && err != ETIMEDOUT) ThrowErrno(env, "handover_readable", err);
  return Napi::Boolean::New(env, err == 0);
}

void Close(const Napi::CallbackInfo& info) {
  int fd = static_cast<int>(ArgU32(info, 0, "close", "fd"));
  close(fd);
}

}  // namespace

void InitFdPass(Napi::Env env, Napi::Object exports) {
  Napi::Object h = Napi::Object::New(env);
  h.Set("listen", Napi::Function::New(env, Listen, "listen"));
  h.Set("accept", Napi::Function::New(env, Accept, "accept"));
  h.Set("connect", Napi::Function::New(env, Connect, "connect"));
  h.Set("send", Napi::Function::New(env, Send, "send"));
  h.Set("recv", Napi::Function::New(env, Recv, "recv"));
  h.Set("readable", Napi::Function::New(env, Readable, "readable"));
  h.Set("peerUid", Napi::Function::New(env, PeerUid, "peerUid"));
  h.Set("dup", Napi::Function::New(env, Dup, "dup"));
  h.Set("close", Napi::Function::New(env, Close, "close"));
  exports.Set("handover", h);
}

}  // namespace ecnet
