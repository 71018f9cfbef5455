#include "splicer.h"

#include <cerrno>
#include <ctime>

#include <fcntl.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

namespace ecnet {

namespace {

// Bytes asked of one splice(2); pipes are grown to this so a burst needs few calls (best effort: without
// CAP_SYS_RESOURCE past fs.pipe-max-size it stays at the default 64 KiB).
constexpr int kPipeBytes = 256 * 1024;
// Idle pipes kept for the next burst; more are closed.
constexpr size_t kPoolPipes = 64;
constexpr uint64_t kWakeKey = 0;

int64_t NowMs() {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<int64_t>(ts.tv_sec) * 1000 + ts.tv_nsec / 1000000;
}

void CloseFd(int& fd) {
  if (fd >= 0) close(fd);
  fd = -1;
}

std::string PendingArg(const Napi::CallbackInfo& info, size_t i) {
  if (info.Length() <= i || info[i].IsUndefined() || info[i].IsNull()) return {};
  Bytes b = ArgBytes(info, i, "splice_add", i == 3 ? "pendingAtoB" : "pendingBtoA");
  return std::string(reinterpret_cast<const char*>(b.data), b.size);
}

}  // namespace

Napi::Function Splicer::Init(Napi::Env env) {
  return DefineClass(env, "Splicer",
                     {
                         InstanceMethod<&Splicer::Add>("add"),
                         InstanceMethod<&Splicer::Abort>("abort"),
                         InstanceMethod<&Splicer::Stats>("stats"),
                         InstanceMethod<&Splicer::Close>("close"),
                     });
}

Splicer::Splicer(const Napi::CallbackInfo& info) : Napi::ObjectWrap<Splicer>(info) {
  Napi::Env env = info.Env();
  if (info.Length() != 1 || !info[0].IsFunction())
    ThrowErrno(env, "new Splicer", EINVAL, "argument must be the callback (id, errno, aToB, bToA)");
  epfd_ = epoll_create1(EPOLL_CLOEXEC);
  if (epfd_ < 0) ThrowErrno(env, "epoll_create1", errno);
  wakefd_ = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  if (wakefd_ < 0) {
    int err = errno;
    CloseFd(epfd_);
    ThrowErrno(env, "eventfd", err);
  }
  struct epoll_event ev = {};
  ev.events = EPOLLIN;
  ev.data.u64 = kWakeKey;
  if (epoll_ctl(epfd_, EPOLL_CTL_ADD, wakefd_, &ev) < 0) {
    int err = errno;
    CloseFd(wakefd_);
    CloseFd(epfd_);
    ThrowErrno(env, "epoll_ctl", err);
  }
  // The JS object stays alive until the last queued report has run (the finalizer below), so the thread's
  // reports never reach a freed Splicer; the function does not hold the event loop open by itself.
  Ref();
  tsfn_ = Napi::ThreadSafeFunction::New(env, info[0].As<Napi::Function>(), "ecnet splicer", 0, 1,
                                        [this](Napi::Env) { Unref(); });
  tsfn_.Unref(env);
  thread_ = std::thread([this] { Run(); });
}

Splicer::~Splicer() {
  // Only reached after close() (the Ref above), or when the environment is torn down.
  if (!closed_) {
    stopping_ = true;
    uint64_t one = 1;
    (void)!write(wakefd_, &one, sizeof(one));
    if (thread_.joinable()) thread_.join();
  }
  CloseFd(wakefd_);
  CloseFd(epfd_);
}

Napi::Value Splicer::Add(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const std::string op = "splice_add";
  if (closed_) ThrowErrno(env, op, EBADF, "splicer is closed");
  uint32_t fdA = ArgU32(info, 0, op, "fdA");
  uint32_t fdB = ArgU32(info, 1, op, "fdB");
  uint32_t idleMs = ArgU32(info, 2, op, "idleMs");
  auto pair = std::make_unique<SplicePair>();
  pair->dir[0].pending = PendingArg(info, 3);
  pair->dir[1].pending = PendingArg(info, 4);
  // Own dups: the caller closes its descriptors right after this call, the sockets live on here.
  FdGuard a(fcntl(static_cast<int>(fdA), F_DUPFD_CLOEXEC, 0));
  if (a.get() < 0) ThrowErrno(env, op + " dup", errno);
  FdGuard b(fcntl(static_cast<int>(fdB), F_DUPFD_CLOEXEC, 0));
  if (b.get() < 0) ThrowErrno(env, op + " dup", errno);
  for (int fd : {a.get(), b.get()}) {
    int type = 0;
    socklen_t len = sizeof(type);
    if (getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &len) < 0 || type != SOCK_STREAM)
      ThrowErrno(env, op, ENOTSOCK, "both descriptors must be stream sockets");
    int fl = fcntl(fd, F_GETFL);
    if (fl < 0 || fcntl(fd, F_SETFL, fl | O_NONBLOCK) < 0) ThrowErrno(env, op + " fcntl", errno);
  }
  uint32_t id = nextId_++;
  if (nextId_ == 0) nextId_ = 1;
  pair->id = id;
  pair->idleMs = idleMs;
  pair->fd[0] = a.release();
  pair->fd[1] = b.release();
  pair->dir[0].from = pair->dir[1].to = pair->fd[0];
  pair->dir[0].to = pair->dir[1].from = pair->fd[1];
  livePairs_++;
  {
    std::lock_guard<std::mutex> lock(mu_);
    adds_.push_back(std::move(pair));
  }
  uint64_t one = 1;
  (void)!write(wakefd_, &one, sizeof(one));
  return Napi::Number::New(env, id);
}

void Splicer::Abort(const Napi::CallbackInfo& info) {
  uint32_t id = ArgU32(info, 0, "splice_abort", "id");
  if (closed_) return;
  {
    std::lock_guard<std::mutex> lock(mu_);
    aborts_.push_back(id);
  }
  uint64_t one = 1;
  (void)!write(wakefd_, &one, sizeof(one));
}

Napi::Value Splicer::Stats(const Napi::CallbackInfo& info) {
  Napi::Object out = Napi::Object::New(info.Env());
  out.Set("pairs", livePairs_.load());
  out.Set("pipes", livePipes_.load());
  return out;
}

void Splicer::Close(const Napi::CallbackInfo&) { Stop(); }

void Splicer::Stop() {
  if (closed_) return;
  closed_ = true;
  stopping_ = true;
  uint64_t one = 1;
  (void)!write(wakefd_, &one, sizeof(one));
  if (thread_.joinable()) thread_.join();
  tsfn_.Release();
}

// --- the thread ---

void Splicer::Run() {
  struct epoll_event events[256];
  int64_t lastScan = NowMs();
  while (!stopping_) {
    int n = epoll_wait(epfd_, events, 256, 1000);
    if (n < 0 && errno != EINTR) break;
    for (int i = 0; i < n; i++) {
      uint64_t key = events[i].data.u64;
      if (key == kWakeKey) {
        uint64_t v;
        (void)!read(wakefd_, &v, sizeof(v));
        TakeCommands();
        continue;
      }
      auto it = pairs_.find(static_cast<uint32_t>(key));
      if (it != pairs_.end()) Pump(*it->second);
    }
    int64_t now = NowMs();
    if (now - lastScan >= 1000) {
      ScanIdle(now);
      lastScan = now;
    }
  }
  // Closing: every pair ends now, reported as aborted; nothing is left open.
  TakeCommands();
  std::vector<uint32_t> ids;
  for (auto& [id, pair] : pairs_) ids.push_back(id);
  for (uint32_t id : ids) Finish(id, ECANCELED);
  for (int fd : pool_) close(fd);
  livePipes_ -= static_cast<uint32_t>(pool_.size() / 2);
  pool_.clear();
}

void Splicer::TakeCommands() {
  std::vector<std::unique_ptr<SplicePair>> adds;
  std::vector<uint32_t> aborts;
  {
    std::lock_guard<std::mutex> lock(mu_);
    adds.swap(adds_);
    aborts.swap(aborts_);
  }
  for (auto& pair : adds) {
    SplicePair& p = *pair;
    uint32_t id = p.id;
    p.lastActive = NowMs();
    pairs_.emplace(id, std::move(pair));
    int err = 0;
    for (int fd : p.fd) {
      // Edge-triggered on both ends: any change on either socket pumps both directions until they block.
      struct epoll_event ev = {};
      ev.events = EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET;
      ev.data.u64 = id;
      if (!err && epoll_ctl(epfd_, EPOLL_CTL_ADD, fd, &ev) < 0) err = errno;
    }
    if (err)
      Finish(id, err);
    else
      Pump(p);
  }
  for (uint32_t id : aborts)
    if (pairs_.count(id)) Finish(id, ECANCELED);
}

void Splicer::Pump(SplicePair& p) {
  bool any = false;
  for (;;) {
    bool progress = false;
    for (SpliceDir& d : p.dir) {
      int err = PumpDir(p, d, progress);
      if (err) return Finish(p.id, err);
    }
    if (!progress) break;
    any = true;
  }
  if (any) p.lastActive = NowMs();
  if (p.dir[0].shut && p.dir[1].shut) Finish(p.id, 0);
}

int Splicer::PumpDir(SplicePair&, SpliceDir& d, bool& progress) {
  if (d.shut) return 0;
  while (!d.pending.empty()) {
    ssize_t n = send(d.to, d.pending.data(), d.pending.size(), MSG_NOSIGNAL | MSG_DONTWAIT);
    if (n < 0) {
      if (errno == EINTR) continue;
      return errno == EAGAIN ? 0 : errno;  // EAGAIN: wait for the peer to read (EPOLLOUT)
    }
    d.pending.erase(0, static_cast<size_t>(n));
    d.bytes += static_cast<uint64_t>(n);
    progress = true;
  }
  for (;;) {
    bool moved = false;
    if (!d.eof) {
      if (d.pipe[0] < 0) {
        int err = TakePipe(d.pipe);
        if (err) return err;
      }
      ssize_t n = splice(d.from, nullptr, d.pipe[1], nullptr, kPipeBytes, SPLICE_F_MOVE | SPLICE_F_NONBLOCK);
      if (n > 0) {
        d.inPipe += static_cast<size_t>(n);
        moved = true;
      } else if (n == 0) {
        d.eof = true;
        moved = true;
      } else if (errno == EINTR) {
        continue;
      } else if (errno != EAGAIN) {  // EAGAIN: nothing to read, or the pipe is full
        return errno;
      }
    }
    if (d.inPipe > 0) {
      ssize_t n = splice(d.pipe[0], nullptr, d.to, nullptr, d.inPipe, SPLICE_F_MOVE | SPLICE_F_NONBLOCK);
      if (n > 0) {
        d.inPipe -= static_cast<size_t>(n);
        d.bytes += static_cast<uint64_t>(n);
        moved = true;
      } else if (n < 0 && errno == EINTR) {
        continue;
      } else if (n < 0 && errno != EAGAIN) {
        return errno;
      }
    }
    if (!moved) break;
    progress = true;
  }
  if (d.inPipe == 0 && d.pipe[0] >= 0) GivePipe(d.pipe);
  if (d.eof && d.inPipe == 0) {
    // The half-close travels on only after the last byte did.
    if (shutdown(d.to, SHUT_WR) < 0 && errno != ENOTCONN) return errno;
    d.shut = true;
    progress = true;
  }
  return 0;
}

void Splicer::Finish(uint32_t id, int err) {
  auto it = pairs_.find(id);
  if (it == pairs_.end()) return;
  std::unique_ptr<SplicePair> p = std::move(it->second);
  pairs_.erase(it);
  for (int& fd : p->fd) {
    epoll_ctl(epfd_, EPOLL_CTL_DEL, fd, nullptr);
    CloseFd(fd);
  }
  for (SpliceDir& d : p->dir) {
    if (d.pipe[0] < 0) continue;
    if (d.inPipe == 0) {
      GivePipe(d.pipe);
    } else {  // bytes that can no longer go anywhere: the pipe goes with them
      CloseFd(d.pipe[0]);
      CloseFd(d.pipe[1]);
      livePipes_--;
    }
  }
  livePairs_--;
  bool queue = false;
  {
    std::lock_guard<std::mutex> lock(mu_);
    done_.push_back(SpliceDone{id, err, {p->dir[0].bytes, p->dir[1].bytes}});
    if (!flushQueued_) flushQueued_ = queue = true;
  }
  // One call into JS per batch of endings, however many pairs ended meanwhile.
  if (queue) tsfn_.NonBlockingCall([this](Napi::Env env, Napi::Function cb) {
      std::vector<SpliceDone> done;
      {
        std::lock_guard<std::mutex> lock(mu_);
        done.swap(done_);
        flushQueued_ = false;
      }
      // A throwing callback must not cost the other pairs their report: the first error is rethrown after.
      std::optional<Napi::Error> first;
      for (const SpliceDone& d : done) {
        try {
          cb.Call({Napi::Number::New(env, d.id), Napi::Number::New(env, d.err),
                   Napi::Number::New(env, static_cast<double>(d.bytes[0])),
                   Napi::Number::New(env, static_cast<double>(d.bytes[1]))});
        } catch (const Napi::Error& e) {
          if (!first) first = e;
        }
      }
      if (first) first->ThrowAsJavaScriptException();
    });
}

void Splicer::ScanIdle(int64_t now) {
  std::vector<uint32_t> idle;
  for (auto& [id, p] : pairs_)
    if (p->idleMs > 0 && now - p->lastActive >= p->idleMs) idle.push_back(id);
  for (uint32_t id : idle) Finish(id, ETIMEDOUT);
}

int Splicer::TakePipe(int out[2]) {
  if (pool_.size() >= 2) {
    out[1] = pool_.back();
    pool_.pop_back();
    out[0] = pool_.back();
    pool_.pop_back();
    return 0;
  }
  if (pipe2(out, O_NONBLOCK | O_CLOEXEC) < 0) return errno;
  (void)fcntl(out[1], F_SETPIPE_SZ, kPipeBytes);
  livePipes_++;
  return 0;
}

void Splicer::GivePipe(int pipe[2]) {
  if (pool_.size() < kPoolPipes * 2) {
    pool_.push_back(pipe[0]);
    pool_.push_back(pipe[1]);
  } else {
    close(pipe[0]);
    close(pipe[1]);
    livePipes_--;
  }
  pipe[0] = pipe[1] = -1;
}

}  // namespace ecnet
