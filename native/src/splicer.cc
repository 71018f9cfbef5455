#include "splicer.h"

#include <algorithm>
#include <chrono>
#include <cerrno>
#include <csignal>
#include <cmath>
#include <ctime>
#include <optional>
#include <system_error>

#include <fcntl.h>
#include <pthread.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

namespace ecnet {

namespace {

// Bytes asked of one splice(2); pipes are grown to this so a burst needs few calls. Best effort: past the
// user's pipe-user-pages-soft (64 MiB by default) the kernel refuses to grow a pipe without CAP_SYS_RESOURCE,
// and it stays at the 64 KiB default.
constexpr int kPipeBytes = 256 * 1024;
// Idle pipes kept for the next burst; more are closed.
constexpr size_t kPoolPipes = 64;
// Bytes one pair may move per turn before the others get theirs (a bulk transfer must not starve a
// request/response pair on the same thread); a pair that stops at it is pumped again without an edge.
constexpr size_t kTurnBytes = 256 * 1024;
// The copy fallback's buffer, when no pipe can be had (descriptors exhausted).
constexpr size_t kCopyBytes = 64 * 1024;
constexpr uint64_t kWakeKey = 0;

std::string PendingArg(const Napi::CallbackInfo& info, size_t i) {
  if (info.Length() <= i || info[i].IsUndefined() || info[i].IsNull()) return {};
  Bytes b = ArgBytes(info, i, "splice_add", i == 3 ? "pendingAtoB" : "pendingBtoA");
  return std::string(reinterpret_cast<const char*>(b.data), b.size);
}

std::string StringArg(Napi::Object o, const char* name) {
  Napi::Value v = o.Get(name);
  if (!v.IsBuffer()) return {};
  auto b = v.As<Napi::Buffer<uint8_t>>();
  return std::string(reinterpret_cast<const char*>(b.Data()), b.Length());
}

uint64_t U64(Napi::Object o, const char* name) {
  Napi::Value v = o.Get(name);
  double d = v.IsNumber() ? v.As<Napi::Number>().DoubleValue() : 0;
  return std::isfinite(d) && d > 0 && d <= 9007199254740992.0 ? static_cast<uint64_t>(d) : 0;
}

}  // namespace

SplicePair::~SplicePair() {
  if (counters) counters->active.fetch_sub(1, std::memory_order_relaxed);
  for (int& f : fd) CloseFd(f);
  for (SpliceDir& d : dir) {
    CloseFd(d.pipe[0]);
    CloseFd(d.pipe[1]);
  }
}

Napi::Function Splicer::Init(Napi::Env env) {
  return DefineClass(env, "Splicer",
                     {
                         InstanceMethod<&Splicer::Add>("add"),
                         InstanceMethod<&Splicer::Abort>("abort"),
                         InstanceMethod<&Splicer::Stats>("stats"),
                         InstanceMethod<&Splicer::TagStats>("tagStats"),
                         InstanceMethod<&Splicer::TagReset>("tagReset"),
                         InstanceMethod<&Splicer::KeepAlive>("keepAlive"),
                         InstanceMethod<&Splicer::Close>("close"),
                         InstanceMethod<&Splicer::Detach>("detach"),
                         InstanceMethod<&Splicer::Release>("release"),
                         InstanceMethod<&Splicer::Restore>("restore"),
                         InstanceMethod<&Splicer::Adopt>("adopt"),
                         InstanceMethod<&Splicer::Start>("start"),
                         InstanceMethod<&Splicer::Drop>("drop"),
                         InstanceMethod<&Splicer::FrontStart>("frontStart"),
                         InstanceMethod<&Splicer::FrontRoutes>("frontRoutes"),
                         InstanceMethod<&Splicer::FrontPause>("frontPause"),
                         InstanceMethod<&Splicer::FrontRelease>("frontRelease"),
                         InstanceMethod<&Splicer::FrontStats>("frontStats"),
                     });
}

Splicer::Splicer(const Napi::CallbackInfo& info) : Napi::ObjectWrap<Splicer>(info) {
  Napi::Env env = info.Env();
  env_ = env;
  if (info.Length() != 1 || !info[0].IsFunction())
    ThrowErrno(env, "new Splicer", EINVAL, "argument must be the callback (id, errno, aToB, bToA)");
  epfd_ = epoll_create1(EPOLL_CLOEXEC);
  if (epfd_ < 0) ThrowErrno(env, "epoll_create1", errno);
  wakefd_ = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  struct epoll_event ev = {};
  ev.events = EPOLLIN;
  ev.data.u64 = kWakeKey;
  if (wakefd_ < 0 || epoll_ctl(epfd_, EPOLL_CTL_ADD, wakefd_, &ev) < 0) {
    int err = errno;
    const char* op = wakefd_ < 0 ? "eventfd" : "epoll_ctl";
    CloseFd(wakefd_);
    CloseFd(epfd_);
    ThrowErrno(env, op, err);
  }
  try {
    tsfn_ = Napi::ThreadSafeFunction::New(env, info[0].As<Napi::Function>(), "ecnet splicer", 0, 1,
                                          [this](Napi::Env) { Unref(); });
  } catch (...) {
    CloseFd(wakefd_);
    CloseFd(epfd_);
    throw;
  }
  // The JS object stays alive until the report function is finalized (after its last queued report), so a
  // report never reaches a freed Splicer. Pairs hold the event loop only when keepAlive(true) says so.
  Ref();
  tsfn_.Unref(env);
  try {
    thread_ = std::thread([this] { Run(); });
  } catch (const std::system_error& e) {
    tsfn_.Release();  // its finalizer drops the Ref
    CloseFd(wakefd_);
    CloseFd(epfd_);
    closed_ = true;
    ThrowErrno(env, "splicer thread", e.code().value());
  }
  // At environment teardown the thread must be joined while the report function is still valid: cleanup
  // hooks run last-in first-out, so this one runs before the function's own.
  if (napi_add_env_cleanup_hook(env, &Splicer::CleanupHook, this) == napi_ok) hookAdded_ = true;
}

Splicer::~Splicer() {
  // Only reached after Stop() (close(), or the cleanup hook), or when the environment is torn down.
  if (!closed_) {
    stopping_ = true;
    Wake();
    if (thread_.joinable()) thread_.join();
  }
  if (hookAdded_) napi_remove_env_cleanup_hook(env_, &Splicer::CleanupHook, this);
  CloseFd(wakefd_);
  CloseFd(epfd_);
  // Connections handed to JavaScript that no report reached (the environment went first): nobody owns them.
  std::lock_guard<std::mutex> lock(frontOut_->mu);
  for (FrontHanded& h : frontOut_->handed) CloseFd(h.fd);
  frontOut_->handed.clear();
}

void Splicer::CleanupHook(void* self) {
  auto* s = static_cast<Splicer*>(self);
  s->hookAdded_ = false;  // a hook is removed by running
  s->Stop();
}

void Splicer::Wake() {
  uint64_t one = 1;
  if (wakefd_ >= 0) (void)!write(wakefd_, &one, sizeof(one));
}

Napi::Value Splicer::Add(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const std::string op = "splice_add";
  if (closed_) ThrowErrno(env, op, EBADF, "splicer is closed");
  if (int err = failed_.load()) ThrowErrno(env, op, err, "the splicer thread stopped");
  uint32_t fdA = ArgU32(info, 0, op, "fdA");
  uint32_t fdB = ArgU32(info, 1, op, "fdB");
  uint32_t idleMs = ArgU32(info, 2, op, "idleMs");
  int32_t tag = -1;
  TagCounters* counters = TagArg(info, 6, op, tag);
  bool swapped = info.Length() > 7 && info[7].ToBoolean();
  auto pair = std::make_unique<SplicePair>();
  pair->SetTag(counters, tag, swapped);
  pair->dir[0].pending = PendingArg(info, 3);
  pair->dir[1].pending = PendingArg(info, 4);
  // Own dups: the caller closes its descriptors right after this call, the sockets live on here.
  pair->fd[0] = fcntl(static_cast<int>(fdA), F_DUPFD_CLOEXEC, 0);
  if (pair->fd[0] < 0) ThrowErrno(env, op + " dup", errno);
  pair->fd[1] = fcntl(static_cast<int>(fdB), F_DUPFD_CLOEXEC, 0);
  if (pair->fd[1] < 0) ThrowErrno(env, op + " dup", errno);
  for (int fd : pair->fd) {
    int type = 0;
    socklen_t len = sizeof(type);
    if (getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &len) < 0 || type != SOCK_STREAM)
      ThrowErrno(env, op, ENOTSOCK, "both descriptors must be stream sockets");
    int fl = fcntl(fd, F_GETFL);
    if (fl < 0 || fcntl(fd, F_SETFL, fl | O_NONBLOCK) < 0) ThrowErrno(env, op + " fcntl", errno);
  }
  // A sealed pair: {send, recv: 32-byte secrets, server: bool, rekeyRecords?}. fdB is the tunnel.
  if (info.Length() > 5 && info[5].IsObject()) {
    Napi::Object seal = info[5].As<Napi::Object>();
    auto secret = [&](const char* name) {
      Napi::Value v = seal.Get(name);
      if (!v.IsBuffer() || v.As<Napi::Buffer<uint8_t>>().Length() != kRecordSecret)
        ThrowErrno(env, op, EINVAL, std::string("seal.") + name + " must be a 32-byte Buffer");
      return v.As<Napi::Buffer<uint8_t>>().Data();
    };
    uint64_t rekey = U64(seal, "rekeyRecords");  // 0: the default
    bool server = seal.Get("server").ToBoolean();
    SpliceDir& out = pair->dir[0];  // plaintext from A, sealed to B
    SpliceDir& in = pair->dir[1];   // records from B, opened to A
    out.mode = SpliceDir::Mode::kSeal;
    in.mode = SpliceDir::Mode::kOpen;
    out.cipher = std::make_unique<RecordCipher>(secret("send"), true, rekey);
    in.cipher = std::make_unique<RecordCipher>(secret("recv"), false, rekey);
    if (!out.cipher->ok() || !in.cipher->ok()) ThrowErrno(env, op, ENOTSUP, "AES-128-GCM is not available");
    // The client speaks first (an empty record), after the TLS stream it stopped reading; the server sends
    // nothing until that record arrived, so no record can reach a TLS layer still reading the socket.
    out.held = server;
    in.releases = server ? &out : nullptr;
    bool ok = true;
    auto sealInto = [&](const uint8_t* p, size_t n) {
      size_t size = out.cipher->Seal(kRecordData, p, n, out.records.Room(n + kRecordHeader + kRecordTag));
      out.records.end += size;
      ok = ok && size > 0;
    };
    if (!server) sealInto(nullptr, 0);
    // What Node had already read from A is sealed next.
    for (size_t at = 0; at < out.pending.size(); at += kRecordMaxPlain) {
      size_t n = std::min(kRecordMaxPlain, out.pending.size() - at);
      sealInto(reinterpret_cast<const uint8_t*>(out.pending.data()) + at, n);
      out.Count(n);
    }
    out.pending.clear();
    // A had already ended (its FIN read by Node): the end record follows what it sent.
    out.eof = seal.Get("aEnded").ToBoolean();
    // What Node had already read (and decrypted) from B goes to A first.
    if (!in.pending.empty()) {
      std::memcpy(in.plain.Room(in.pending.size()), in.pending.data(), in.pending.size());
      in.plain.end += in.pending.size();
      in.pending.clear();
    }
    if (!ok) ThrowErrno(env, op, EPROTO, "sealing failed");
  }
  uint64_t id = nextId_++;
  pair->id = id;
  pair->idleMs = idleMs;
  pair->dir[0].from = pair->dir[1].to = pair->fd[0];
  pair->dir[0].to = pair->dir[1].from = pair->fd[1];
  {
    std::lock_guard<std::mutex> lock(mu_);
    adds_.push_back(std::move(pair));
  }
  livePairs_++;
  Wake();
  return Napi::Number::New(env, static_cast<double>(id));
}

void Splicer::Abort(const Napi::CallbackInfo& info) {
  uint64_t id = ArgU64(info, 0, "splice_abort", "id");
  if (closed_) return;
  {
    std::lock_guard<std::mutex> lock(mu_);
    aborts_.push_back(id);
  }
  Wake();
}

TagCounters* Splicer::TagArg(const Napi::CallbackInfo& info, size_t i, const std::string& op, int32_t& tag) {
  tag = -1;
  if (info.Length() <= i || info[i].IsUndefined() || info[i].IsNull()) return nullptr;
  double d = info[i].IsNumber() ? info[i].As<Napi::Number>().DoubleValue() : -2;
  if (d == -1) return nullptr;
  if (!(d >= 0 && d <= kMaxTag) || d != std::floor(d))
    ThrowErrno(info.Env(), op, EINVAL, "tag must be an integer 0.." + std::to_string(kMaxTag) + ", or -1 for none");
  tag = static_cast<int32_t>(d);
  return tags_.At(static_cast<uint32_t>(tag));
}

void Splicer::TagReset(const Napi::CallbackInfo& info) {
  if (info.Length() < 1 || !info[0].IsArray()) ThrowErrno(info.Env(), "tagReset", EINVAL, "arguments: tags (an array)");
  Napi::Array tags = info[0].As<Napi::Array>();
  for (uint32_t i = 0; i < tags.Length(); i++) {
    Napi::Value v = tags.Get(i);
    if (!v.IsNumber()) continue;
    double d = v.As<Napi::Number>().DoubleValue();
    if (d >= 0 && d <= kMaxTag && d == std::floor(d)) tags_.Reset(static_cast<uint32_t>(d));
  }
}

Napi::Value Splicer::TagStats(const Napi::CallbackInfo& info) {
  std::vector<double> v = tags_.Snapshot();
  Napi::Float64Array out = Napi::Float64Array::New(info.Env(), v.size());
  if (!v.empty()) std::memcpy(out.Data(), v.data(), v.size() * sizeof(double));
  return out;
}

Napi::Value Splicer::Stats(const Napi::CallbackInfo& info) {
  Napi::Object out = Napi::Object::New(info.Env());
  out.Set("pairs", livePairs_.load());
  out.Set("pipes", livePipes_.load());
  return out;
}

void Splicer::KeepAlive(const Napi::CallbackInfo& info) {
  if (closed_) return;
  if (info.Length() > 0 && info[0].ToBoolean())
    tsfn_.Ref(info.Env());
  else
    tsfn_.Unref(info.Env());
}

void Splicer::Close(const Napi::CallbackInfo&) { Stop(); }

// The pairs leave the thread unreported: their state and descriptors go to another process, or come back.
Napi::Value Splicer::Detach(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (closed_) ThrowErrno(env, "splice_detach", EBADF, "splicer is closed");
  std::vector<std::unique_ptr<SplicePair>> pairs;
  {
    std::unique_lock<std::mutex> lock(mu_);
    detachAsked_ = true;
    Wake();
    if (!detachCv_.wait_for(lock, std::chrono::seconds(5), [this] { return !detachAsked_ || failed_.load(); }))
      ThrowErrno(env, "splice_detach", ETIMEDOUT, "the splicer thread did not answer");
    if (detachAsked_) ThrowErrno(env, "splice_detach", failed_.load(), "the splicer thread stopped");
    pairs.swap(detachedNow_);
  }
  Napi::Array out = Napi::Array::New(env);
  uint32_t i = 0;
  for (auto& p : pairs) {
    Napi::Object o = Napi::Object::New(env);
    o.Set("id", static_cast<double>(p->id));
    o.Set("idleMs", static_cast<double>(p->idleMs));
    // This process's tag: the adopting one translates it into its own (adopt's argument).
    o.Set("tag", p->tag);
    o.Set("swapped", p->swapped);
    Napi::Array fds = Napi::Array::New(env);
    uint32_t nfd = 0;
    fds.Set(nfd++, p->fd[0]);
    fds.Set(nfd++, p->fd[1]);
    Napi::Array dirs = Napi::Array::New(env);
    for (int k = 0; k < 2; k++) {
      SpliceDir& d = p->dir[k];
      Napi::Object x = Napi::Object::New(env);
      x.Set("mode", static_cast<int>(d.mode));
      x.Set("pending", BufferOf(env, reinterpret_cast<const uint8_t*>(d.pending.data()), d.pending.size()));
      x.Set("eof", d.eof);
      x.Set("shut", d.shut);
      x.Set("bytes", static_cast<double>(d.bytes));
      // Bytes in flight in a pipe travel with the pipe itself; an empty one is closed with the pair.
      x.Set("inPipe", static_cast<double>(d.inPipe));
      if (d.inPipe > 0 && d.pipe[0] >= 0) {
        fds.Set(nfd++, d.pipe[0]);
        fds.Set(nfd++, d.pipe[1]);
      }
      if (d.cipher) {
        uint8_t secret[kRecordSecret];
        uint64_t seq = 0, rekey = 0;
        d.cipher->Export(secret, seq, rekey);
        x.Set("secret", BufferOf(env, secret, sizeof(secret)));
        std::memset(secret, 0, sizeof(secret));
        x.Set("seq", static_cast<double>(seq));
        x.Set("rekey", static_cast<double>(rekey));
        x.Set("records", BufferOf(env, d.records.data(), d.records.size()));
        x.Set("plain", BufferOf(env, d.plain.data(), d.plain.size()));
        x.Set("opened", static_cast<double>(d.opened));
        x.Set("openedSent", static_cast<double>(d.openedSent));
        x.Set("held", d.held);
        x.Set("releases", d.releases != nullptr);
        x.Set("ended", d.ended);
        x.Set("recordsOpened", static_cast<double>(d.recordsOpened));
      }
      dirs.Set(static_cast<uint32_t>(k), x);
    }
    o.Set("dirs", dirs);
    o.Set("fds", fds);
    out.Set(i++, o);
    livePairs_--;
    detached_.emplace(p->id, std::move(p));
  }
  return out;
}

// The pairs of `from` named by the array argument, taken out of it (ids it does not hold are skipped).
std::vector<std::unique_ptr<SplicePair>> Splicer::TakeIds(const Napi::CallbackInfo& info, PairMap& from) {
  std::vector<std::unique_ptr<SplicePair>> out;
  if (info.Length() < 1 || !info[0].IsArray()) return out;
  Napi::Array ids = info[0].As<Napi::Array>();
  for (uint32_t i = 0; i < ids.Length(); i++) {
    auto it = from.find(static_cast<uint64_t>(ids.Get(i).ToNumber().DoubleValue()));
    if (it == from.end()) continue;
    out.push_back(std::move(it->second));
    from.erase(it);
  }
  return out;
}

// Pairs closed here because another process holds them (its own copies of the descriptors keep the sockets).
void Splicer::Forget(std::vector<std::unique_ptr<SplicePair>>& pairs, bool counted) {
  for (auto& p : pairs) {
    for (SpliceDir& d : p->dir)
      if (d.pipe[0] >= 0) livePipes_--;
    if (counted) livePairs_--;
  }
  pairs.clear();  // closes them: no FIN reaches anyone while the other copies live
}

void Splicer::Release(const Napi::CallbackInfo& info) {
  auto pairs = TakeIds(info, detached_);
  // A pair the front set up held a slot there: it is freed with the pair (another process carries it now).
  bool any = false;
  {
    std::lock_guard<std::mutex> lock(mu_);
    for (auto& p : pairs)
      if (p->fronted) {
        frontIn_.released.push_back(p->source);
        any = true;
      }
  }
  if (any) Wake();
  Forget(pairs, false);
}

void Splicer::Restore(const Napi::CallbackInfo& info) {
  auto back = TakeIds(info, detached_);
  if (back.empty() || closed_) return;  // after close(): no thread to take them; they close here
  livePairs_ += static_cast<uint32_t>(back.size());
  {
    std::lock_guard<std::mutex> lock(mu_);
    for (auto& p : back) adds_.push_back(std::move(p));
  }
  Wake();
}

// A pair another process detached: its state as detach() gave it, its descriptors (dups are kept here; the
// caller closes its own). Returns the pair's id here.
Napi::Value Splicer::Adopt(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const std::string op = "splice_adopt";
  if (closed_) ThrowErrno(env, op, EBADF, "splicer is closed");
  if (int err = failed_.load()) ThrowErrno(env, op, err, "the splicer thread stopped");
  if (info.Length() < 2 || !info[0].IsObject() || !info[1].IsArray()) ThrowErrno(env, op, EINVAL, "arguments: state, fds");
  Napi::Object st = info[0].As<Napi::Object>();
  // The tag is this process's (state.tag was the other's); the orientation is the pair's own, kept unless given.
  int32_t tag = -1;
  TagCounters* counters = TagArg(info, 3, op, tag);
  bool swapped = info.Length() > 4 && !info[4].IsUndefined() && !info[4].IsNull() ? info[4].ToBoolean()
                                                                                   : st.Get("swapped").ToBoolean();
  Napi::Array fdArr = info[1].As<Napi::Array>();
  Napi::Value dv = st.Get("dirs");
  if (!dv.IsArray() || dv.As<Napi::Array>().Length() != 2) ThrowErrno(env, op, EINVAL, "state.dirs must have 2 directions");
  Napi::Array dirs = dv.As<Napi::Array>();
  std::vector<int> fds;
  for (uint32_t i = 0; i < fdArr.Length(); i++) fds.push_back(fdArr.Get(i).As<Napi::Number>().Int32Value());
  auto pair = std::make_unique<SplicePair>();
  size_t next = 0;
  auto dup = [&](int& into) {
    if (next >= fds.size()) ThrowErrno(env, op, EINVAL, "fewer descriptors than the state needs");
    into = fcntl(fds[next++], F_DUPFD_CLOEXEC, 0);
    if (into < 0) ThrowErrno(env, op + " dup", errno);
    int fl = fcntl(into, F_GETFL);
    if (fl < 0 || fcntl(into, F_SETFL, fl | O_NONBLOCK) < 0) ThrowErrno(env, op + " fcntl", errno);
  };
  dup(pair->fd[0]);
  dup(pair->fd[1]);
  for (int fd : pair->fd) {
    int type = 0;
    socklen_t len = sizeof(type);
    if (getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &len) < 0 || type != SOCK_STREAM)
      ThrowErrno(env, op, ENOTSOCK, "a pair's descriptors must be stream sockets");
  }
  constexpr size_t kMaxRecord = kRecordHeader + kRecordMaxPlain + kRecordTag;
  constexpr size_t kMaxPending = 4u << 20;  // what Node can have read ahead is far less
  int mode0 = dirs.Get(0u).As<Napi::Object>().Get("mode").ToNumber().Int32Value();
  int mode1 = dirs.Get(1u).As<Napi::Object>().Get("mode").ToNumber().Int32Value();
  if (!((mode0 == 0 && mode1 == 0) || (mode0 == 1 && mode1 == 2))) ThrowErrno(env, op, EINVAL, "the directions' modes do not make a pair");
  for (int k = 0; k < 2; k++) {
    Napi::Object x = dirs.Get(static_cast<uint32_t>(k)).As<Napi::Object>();
    SpliceDir& d = pair->dir[k];
    int mode = x.Get("mode").ToNumber().Int32Value();
    if (mode < 0 || mode > 2) ThrowErrno(env, op, EINVAL, "unknown direction mode");
    d.mode = static_cast<SpliceDir::Mode>(mode);
    d.pending = StringArg(x, "pending");
    if (d.pending.size() > kMaxPending) ThrowErrno(env, op, EINVAL, "pending bytes out of bounds");
    d.eof = x.Get("eof").ToBoolean();
    d.shut = x.Get("shut").ToBoolean();
    d.bytes = U64(x, "bytes");
    d.inPipe = U64(x, "inPipe");
    if (d.inPipe > 0) {
      dup(d.pipe[0]);
      dup(d.pipe[1]);
      d.pipeForeign = true;
      // The two ends of one pipe, holding exactly the bytes the state says (else a later pair could read them).
      struct stat r = {}, w = {};
      int queued = -1;
      if (fstat(d.pipe[0], &r) < 0 || fstat(d.pipe[1], &w) < 0 || !S_ISFIFO(r.st_mode) || r.st_ino != w.st_ino ||
          r.st_dev != w.st_dev || (fcntl(d.pipe[0], F_GETFL) & O_ACCMODE) != O_RDONLY ||
          (fcntl(d.pipe[1], F_GETFL) & O_ACCMODE) != O_WRONLY || ioctl(d.pipe[0], FIONREAD, &queued) < 0 ||
          static_cast<size_t>(queued) != d.inPipe)
        ThrowErrno(env, op, EINVAL, "a direction's pipe is not the one its state describes");
    }
    if (d.mode != SpliceDir::Mode::kSplice) {
      std::string secret = StringArg(x, "secret");
      if (secret.size() != kRecordSecret) ThrowErrno(env, op, EINVAL, "a sealed direction needs its 32-byte secret");
      d.cipher = std::make_unique<RecordCipher>(reinterpret_cast<const uint8_t*>(secret.data()),
                                                d.mode == SpliceDir::Mode::kSeal, U64(x, "rekey"));
      if (!d.cipher->ok()) ThrowErrno(env, op, ENOTSUP, "AES-128-GCM is not available");
      d.cipher->Resume(U64(x, "seq"));
      for (auto [name, q] : {std::pair<const char*, ByteQueue*>{"records", &d.records}, {"plain", &d.plain}}) {
        std::string b = StringArg(x, name);
        if (!b.empty()) {
          std::memcpy(q->Room(b.size()), b.data(), b.size());
          q->end += b.size();
        }
      }
      d.opened = U64(x, "opened");
      d.openedSent = U64(x, "openedSent");
      if (d.records.size() > 2 * kMaxRecord || d.plain.size() > kMaxPending) ThrowErrno(env, op, EINVAL, "queued bytes out of bounds");
      if (d.mode == SpliceDir::Mode::kSeal ? d.opened != 0 || d.openedSent != 0
                                           : (d.opened > 0 && d.opened + kRecordHeader + kRecordTag > d.records.size()) ||
                                                 d.openedSent > d.opened)
        ThrowErrno(env, op, EINVAL, "inconsistent opened record");
      d.held = x.Get("held").ToBoolean();
      d.ended = x.Get("ended").ToBoolean();
      d.recordsOpened = U64(x, "recordsOpened");
    }
  }
  if (dirs.Get(1u).As<Napi::Object>().Get("releases").ToBoolean()) pair->dir[1].releases = &pair->dir[0];
  pair->dir[0].from = pair->dir[1].to = pair->fd[0];
  pair->dir[0].to = pair->dir[1].from = pair->fd[1];
  pair->idleMs = static_cast<int64_t>(U64(st, "idleMs"));
  pair->SetTag(counters, tag, swapped);  // the bytes the state carries were counted where they moved
  // Counted only now that nothing can refuse the pair (a refused one closes its dups as it goes).
  for (SpliceDir& d : pair->dir)
    if (d.pipe[0] >= 0) livePipes_++;
  uint64_t id = nextId_++;
  pair->id = id;
  livePairs_++;
  // Parked: held here, not pumped, until start() (the predecessor has let go) or drop() (it keeps the pair).
  if (info.Length() > 2 && info[2].ToBoolean()) {
    parked_.emplace(id, std::move(pair));
    return Napi::Number::New(env, static_cast<double>(id));
  }
  {
    std::lock_guard<std::mutex> lock(mu_);
    adds_.push_back(std::move(pair));
  }
  Wake();
  return Napi::Number::New(env, static_cast<double>(id));
}

void Splicer::Start(const Napi::CallbackInfo& info) {
  auto go = TakeIds(info, parked_);
  if (go.empty() || closed_) return;
  {
    std::lock_guard<std::mutex> lock(mu_);
    for (auto& p : go) adds_.push_back(std::move(p));
  }
  Wake();
}

// Parked pairs the predecessor keeps: only these dups close (the sockets stay open in the predecessor).
void Splicer::Drop(const Napi::CallbackInfo& info) {
  auto pairs = TakeIds(info, parked_);
  Forget(pairs, true);
}

void Splicer::Stop() {
  if (closed_) return;
  closed_ = true;
  stopping_ = true;
  Wake();
  if (thread_.joinable()) thread_.join();
  CloseFd(wakefd_);
  CloseFd(epfd_);
  if (hookAdded_) {
    napi_remove_env_cleanup_hook(env_, &Splicer::CleanupHook, this);
    hookAdded_ = false;
  }
  tsfn_.Release();
  if (frontStarted_) frontTsfn_.Release();
}

// --- the thread ---

void Splicer::Run() {
  // A splice into a socket whose peer is gone raises SIGPIPE: it must not reach a process that does not
  // ignore it (Node does; an embedder may not). EPIPE is reported as the pair's error instead.
  sigset_t pipe;
  sigemptyset(&pipe);
  sigaddset(&pipe, SIGPIPE);
  pthread_sigmask(SIG_BLOCK, &pipe, nullptr);

  struct epoll_event events[256];
  int64_t lastScan = NowMs();
  int64_t frontCheck = 0;  // when the front's setups are next looked at for deadlines
  int64_t frontWaitMs = 1000;
  while (!stopping_) {
    int n = epoll_wait(epfd_, events, 256, ready_.empty() ? static_cast<int>(frontWaitMs) : 0);
    if (n < 0 && errno != EINTR) {
      failed_ = errno;
      break;
    }
    for (int i = 0; i < n; i++) {
      uint64_t key = events[i].data.u64;
      if (key == kWakeKey) {
        uint64_t v;
        (void)!read(wakefd_, &v, sizeof(v));
        TakeCommands();
        continue;
      }
      if (FrontIsKey(key)) {
        FrontOnEvent(key, events[i].events);
        continue;
      }
      auto it = pairs_.find(key);
      if (it == pairs_.end()) continue;
      SplicePair& p = *it->second;
      // A reset can arrive on a socket whose direction is already done, where no read would see it.
      if (events[i].events & EPOLLERR) {
        int err = SocketError(p.fd[0]);
        if (!err) err = SocketError(p.fd[1]);
        if (err) {
          Finish(key, err);
          continue;
        }
      }
      Pump(p);
    }
    // Pairs that stopped at their turn's budget go again, after everyone else had a turn.
    std::vector<uint64_t> again;
    again.swap(ready_);
    for (uint64_t id : again) {
      auto it = pairs_.find(id);
      if (it == pairs_.end()) continue;
      it->second->ready = false;
      Pump(*it->second);
    }
    int64_t now = NowMs();
    if (now - lastScan >= 1000) {
      ScanIdle(now);
      lastScan = now;
    }
    frontWaitMs = 1000;
    if (front_) {
      if (front_->retryListenAt && front_->retryListenAt < frontCheck) frontCheck = front_->retryListenAt;
      if (front_->nextDeadline && front_->nextDeadline < frontCheck) frontCheck = front_->nextDeadline;
      if (now >= frontCheck) {
        int64_t next = FrontTimers(now);
        frontCheck = now + (next < 0 ? 1000 : std::min<int64_t>(next, 50));
      }
      frontWaitMs = std::max<int64_t>(1, std::min<int64_t>(1000, frontCheck - now));
      FrontFlush();
    }
  }
  // Closing: every pair ends now, reported as aborted (or with the thread's error); nothing is left open.
  TakeCommands();
  int why = failed_ ? failed_.load() : ECANCELED;
  std::vector<uint64_t> ids;
  for (auto& [id, pair] : pairs_) ids.push_back(id);
  for (uint64_t id : ids) Finish(id, why);
  front_.reset();  // its listeners and the connections still being set up
  frontCounters_->setups = 0;
  frontCounters_->open = 0;
  FrontFlush();    // what it had handed to JavaScript and not yet reported
  for (int fd : pool_) close(fd);
  livePipes_ -= static_cast<uint32_t>(pool_.size() / 2);
  pool_.clear();
}

void Splicer::TakeCommands() {
  std::vector<std::unique_ptr<SplicePair>> adds;
  std::vector<uint64_t> aborts;
  FrontInbox front;
  {
    std::lock_guard<std::mutex> lock(mu_);
    adds.swap(adds_);
    aborts.swap(aborts_);
    std::swap(front, frontIn_);
  }
  for (auto& pair : adds) Insert(std::move(pair));
  FrontCommands(front);
  for (uint64_t id : aborts)
    if (pairs_.count(id)) Finish(id, ECANCELED);
  bool detach = false;
  {
    std::lock_guard<std::mutex> lock(mu_);
    detach = detachAsked_;
  }
  if (!detach) return;
  std::vector<std::unique_ptr<SplicePair>> out;
  for (auto& [id, p] : pairs_) {
    for (int fd : p->fd) epoll_ctl(epfd_, EPOLL_CTL_DEL, fd, nullptr);
    p->ready = false;
    out.push_back(std::move(p));
  }
  pairs_.clear();
  ready_.clear();
  {
    std::lock_guard<std::mutex> lock(mu_);
    for (auto& p : out) detachedNow_.push_back(std::move(p));
    detachAsked_ = false;
  }
  detachCv_.notify_all();
}

// A pair on the thread from now on: polled on both ends and pumped once.
void Splicer::Insert(std::unique_ptr<SplicePair> pair) {
  uint64_t id = pair->id;
  pair->lastActive = NowMs();
  SplicePair& p = *pair;
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

void Splicer::Pump(SplicePair& p) {
  bool any = false;
  size_t budget = kTurnBytes;
  for (;;) {
    bool progress = false;
    for (SpliceDir& d : p.dir) {
      int err = PumpDir(d, progress, budget);
      if (err) return Finish(p.id, err);
    }
    if (progress) any = true;
    if (!progress || budget == 0) break;
  }
  if (any) p.lastActive = NowMs();
  if (p.dir[0].shut && p.dir[1].shut) return Finish(p.id, 0);
  if (budget == 0 && !p.ready) {
    p.ready = true;
    ready_.push_back(p.id);
  }
}

// Moves what it can from d.from to d.to until a side blocks or the turn's budget is spent; 0 or an errno.
int Splicer::PumpDir(SpliceDir& d, bool& progress, size_t& budget) {
  if (d.mode == SpliceDir::Mode::kSeal) return SealDir(d, progress, budget);
  if (d.mode == SpliceDir::Mode::kOpen) return OpenDir(d, progress, budget);
  if (d.shut) return 0;
  while (!d.pending.empty()) {
    ssize_t n = send(d.to, d.pending.data(), d.pending.size(), MSG_NOSIGNAL | MSG_DONTWAIT);
    if (n < 0) {
      if (errno == EINTR) continue;
      return errno == EAGAIN ? 0 : errno;  // EAGAIN: wait for the peer to read (EPOLLOUT)
    }
    d.pending.erase(0, static_cast<size_t>(n));
    d.Count(static_cast<uint64_t>(n));
    progress = true;
  }
  while (budget > 0) {
    bool moved = false;
    if (!d.eof && d.pipe[0] < 0 && d.inPipe == 0) {
      int err = TakePipe(d.pipe);
      if (err == EMFILE || err == ENFILE || err == ENOMEM) {
        // No descriptor for a pipe: copy through a buffer rather than fail the pair.
        uint64_t before = d.bytes;
        err = CopyDir(d, moved);
        if (err) return err;
        budget -= std::min(budget, static_cast<size_t>(d.bytes - before));
        if (!moved || !d.pending.empty()) break;
        progress = true;
        continue;
      }
      if (err) return err;
    }
    if (!d.eof) {
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
        d.Count(static_cast<uint64_t>(n));
        budget -= std::min(budget, static_cast<size_t>(n));
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
  if (d.inPipe == 0 && d.pipe[0] >= 0) ReturnPipe(d);
  if (d.eof && d.inPipe == 0 && d.pending.empty()) {
    // The half-close travels on only after the last byte did.
    if (shutdown(d.to, SHUT_WR) < 0 && errno != ENOTCONN) return errno;
    d.shut = true;
    progress = true;
  }
  return 0;
}

// Sends what `q` holds to `to` until it is empty (0), the socket is full (EAGAIN) or fails (its errno); what
// went is charged to the turn's budget and, with `counted`, to the direction's byte count.
int Splicer::SendQueued(int to, ByteQueue& q, SpliceDir* counted, size_t& budget, bool& progress) {
  while (q.size() > 0) {
    ssize_t n = send(to, q.data(), q.size(), MSG_NOSIGNAL | MSG_DONTWAIT);
    if (n < 0) {
      if (errno == EINTR) continue;
      return errno;
    }
    q.Consume(static_cast<size_t>(n));
    if (counted) counted->Count(static_cast<uint64_t>(n));
    budget -= std::min(budget, static_cast<size_t>(n));
    progress = true;
  }
  return 0;
}

// Plaintext from d.from sealed into records to d.to (the tunnel), until a side blocks or the budget is spent.
// Its end travels as an end record, then a FIN; a tunnel that ends without one was cut.
int Splicer::SealDir(SpliceDir& d, bool& progress, size_t& budget) {
  if (d.shut || d.held) return 0;
  for (;;) {
    // What is sealed goes out before anything new is read.
    if (int err = SendQueued(d.to, d.records, nullptr, budget, progress)) return err == EAGAIN ? 0 : err;
    if (d.ended) break;
    if (budget == 0) return 0;
    if (d.eof) {
      size_t n = d.cipher->Seal(kRecordEnd, nullptr, 0, d.records.Room(kRecordHeader + kRecordTag));
      if (!n) return EPROTO;
      d.records.end += n;
      d.ended = true;
      continue;
    }
    // Read straight into the record's place and seal it there (one buffer, warm in the cache).
    uint8_t* room = d.records.Room(kRecordHeader + kRecordMaxPlain + kRecordTag);
    ssize_t n = recv(d.from, room + kRecordHeader, kRecordMaxPlain, MSG_DONTWAIT);
    if (n > 0) {
      size_t size = d.cipher->Seal(kRecordData, room + kRecordHeader, static_cast<size_t>(n), room);
      if (!size) return EPROTO;
      d.records.end += size;
      d.Count(static_cast<uint64_t>(n));
      progress = true;
    } else if (n == 0) {
      d.eof = true;
      progress = true;
    } else if (errno != EINTR) {
      if (errno != EAGAIN) return errno;
      d.records.Free();  // idle: an idle tunnel holds no buffer
      return 0;
    }
  }
  if (shutdown(d.to, SHUT_WR) < 0 && errno != ENOTCONN) return errno;
  d.records.Free();
  d.shut = true;
  progress = true;
  return 0;
}

// Records from d.from (the tunnel) opened, their plaintext to d.to. A record that does not authenticate, one
// after the end record, or a stream that ends without one, cuts the pair: nothing unauthenticated is passed
// on, and a truncated stream never ends like a complete one.
int Splicer::OpenDir(SpliceDir& d, bool& progress, size_t& budget) {
  if (d.shut) return 0;
  constexpr size_t kMaxRecord = kRecordHeader + kRecordMaxPlain + kRecordTag;
  for (;;) {
    if (int err = SendQueued(d.to, d.plain, &d, budget, progress)) return err == EAGAIN ? 0 : err;
    // The last record's plaintext, opened where it arrived.
    while (d.opened > d.openedSent) {
      uint8_t* at = d.records.data() + kRecordHeader + d.openedSent;
      ssize_t n = send(d.to, at, d.opened - d.openedSent, MSG_NOSIGNAL | MSG_DONTWAIT);
      if (n < 0) {
        if (errno == EINTR) continue;
        return errno == EAGAIN ? 0 : errno;
      }
      d.openedSent += static_cast<size_t>(n);
      d.Count(static_cast<uint64_t>(n));  // (the turn was charged when the record was opened)
      progress = true;
    }
    if (d.opened) {
      d.records.Consume(d.opened + kRecordHeader + kRecordTag);
      d.opened = d.openedSent = 0;
    }
    if (d.ended) {
      if (d.records.size() > 0) return EPROTO;  // bytes after the end record
      break;
    }
    if (budget == 0) return 0;
    long size = RecordCipher::RecordSize(d.records.data(), d.records.size());
    if (size < 0) return EPROTO;
    if (size > 0 && d.records.size() >= static_cast<size_t>(size)) {
      uint8_t type = 0;
      if (!d.cipher->Open(d.records.data(), static_cast<size_t>(size), d.records.data() + kRecordHeader, type))
        return EBADMSG;
      d.opened = static_cast<size_t>(size) - kRecordHeader - kRecordTag;
      // An empty data record carries nothing: only the client's first one (its hello) has a purpose. More
      // would cost the thread work without bytes; a peer that sends them is cut.
      if (type == kRecordData && !d.opened && d.recordsOpened > 0) return EPROTO;
      d.recordsOpened++;
      // The turn is charged for what came off the wire, whatever it carried, so that no peer keeps the
      // thread to itself with records that are small or empty.
      budget -= std::min(budget, static_cast<size_t>(size));
      if (!d.opened) d.records.Consume(static_cast<size_t>(size));
      if (d.releases) {  // the peer proved it reads records now: the held direction may send
        d.releases->held = false;
        d.releases = nullptr;
      }
      if (type == kRecordEnd) d.ended = true;
      progress = true;
      continue;
    }
    if (d.eof) return EPROTO;  // the tunnel ended inside a record or without the end record: truncated
    // Up to two records at a time: fewer calls, and never more than that held per direction.
    // (Fewer than kMaxRecord bytes are queued here, else a whole record would be.)
    size_t space = 2 * kMaxRecord - d.records.size();
    uint8_t* room = d.records.Room(space);
    ssize_t n = recv(d.from, room, space, MSG_DONTWAIT);
    if (n > 0) {
      d.records.end += static_cast<size_t>(n);
      progress = true;
    } else if (n == 0) {
      d.eof = true;
      progress = true;
    } else if (errno != EINTR) {
      if (errno != EAGAIN) return errno;
      if (d.records.size() == 0) d.records.Free();  // idle: an idle tunnel holds no buffer
      d.plain.Free();
      return 0;
    }
  }
  if (shutdown(d.to, SHUT_WR) < 0 && errno != ENOTCONN) return errno;
  d.records.Free();
  d.plain.Free();
  d.shut = true;
  progress = true;
  return 0;
}

// One recv/send through a buffer; what the peer did not take waits in d.pending.
int Splicer::CopyDir(SpliceDir& d, bool& moved) {
  static thread_local char buf[kCopyBytes];
  ssize_t n = recv(d.from, buf, sizeof(buf), MSG_DONTWAIT);
  if (n == 0) {
    d.eof = true;
    moved = true;
    return 0;
  }
  if (n < 0) return errno == EAGAIN || errno == EINTR ? 0 : errno;
  moved = true;
  ssize_t w = send(d.to, buf, static_cast<size_t>(n), MSG_NOSIGNAL | MSG_DONTWAIT);
  if (w < 0 && errno != EAGAIN && errno != EINTR) return errno;
  size_t sent = w < 0 ? 0 : static_cast<size_t>(w);
  d.Count(sent);
  if (sent < static_cast<size_t>(n)) d.pending.assign(buf + sent, static_cast<size_t>(n) - sent);
  return 0;
}

void Splicer::Finish(uint64_t id, int err) {
  auto it = pairs_.find(id);
  if (it == pairs_.end()) return;
  std::unique_ptr<SplicePair> p = std::move(it->second);
  pairs_.erase(it);
  // Any end but both directions finished cuts the stream (a socket error, the idle limit, an abort): both
  // peers are reset, so neither can take a cut stream for a complete one, whatever was left in the pipes.
  bool reset = err != 0;
  for (int& fd : p->fd) {
    epoll_ctl(epfd_, EPOLL_CTL_DEL, fd, nullptr);
    if (reset) {
      struct linger l = {1, 0};
      setsockopt(fd, SOL_SOCKET, SO_LINGER, &l, sizeof(l));
    }
    CloseFd(fd);
  }
  for (SpliceDir& d : p->dir) {
    if (d.pipe[0] < 0) continue;
    if (d.inPipe == 0) {
      ReturnPipe(d);
    } else {  // bytes that can no longer go anywhere: the pipe goes with them
      CloseFd(d.pipe[0]);
      CloseFd(d.pipe[1]);
      livePipes_--;
    }
  }
  livePairs_--;
  if (p->fronted) FrontFreeSlot(p->source);
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
      if (static_cast<napi_env>(env) == nullptr || cb.IsEmpty()) return;  // the environment is going
      // A throwing callback must not cost the other pairs their report; the first error is rethrown
      // after, unless JavaScript can no longer run (teardown), where nothing can take it.
      std::optional<Napi::Error> first;
      for (const SpliceDone& d : done) {
        try {
          cb.Call({Napi::Number::New(env, static_cast<double>(d.id)), Napi::Number::New(env, d.err),
                   Napi::Number::New(env, static_cast<double>(d.bytes[0])),
                   Napi::Number::New(env, static_cast<double>(d.bytes[1]))});
        } catch (const Napi::Error& e) {
          if (!first) first = e;
        }
      }
      if (first) {
        try {
          first->ThrowAsJavaScriptException();
        } catch (...) {
        }
      }
    });
}

void Splicer::ScanIdle(int64_t now) {
  std::vector<uint64_t> idle;
  for (auto& [id, p] : pairs_)
    if (p->idleMs > 0 && now - p->lastActive >= p->idleMs) idle.push_back(id);
  for (uint64_t id : idle) Finish(id, ETIMEDOUT);
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
  (void)fcntl(out[1], F_SETPIPE_SZ, kPipeBytes);  // a refusal leaves the default size, which works too
  livePipes_++;
  return 0;
}

// A pipe that came from another process may still be written by it: it is closed, never pooled.
void Splicer::ReturnPipe(SpliceDir& d) {
  if (!d.pipeForeign) return GivePipe(d.pipe);
  CloseFd(d.pipe[0]);
  CloseFd(d.pipe[1]);
  d.pipeForeign = false;
  livePipes_--;
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
