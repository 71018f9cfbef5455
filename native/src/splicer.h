// Splicer: moves the bytes of connected TCP socket pairs both ways inside the kernel (splice(2) through a
// pipe), on one thread of its own, so that the proxy's and the gateway's tunnels cost no copy into Node and
// no JavaScript per chunk. A pair may be sealed: its second socket is an authenticated tunnel that carries
// sealed records (records.h), which this thread seals and opens instead of splicing. It owns the sockets (its
// own dups), the pipes, the ciphers and the thread; each pair ends once, reported to the JS callback with its
// byte counts. A pair may carry a tag (tags.h): its bytes are then added to the tag's counters as they move.
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstring>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <unordered_map>
#include <vector>

#include "common.h"
#include "front.h"
#include "records.h"
#include "tags.h"

namespace ecnet {

// Bytes waiting to be sent or opened: [at, end) of an uninitialised buffer, allocated on demand.
struct ByteQueue {
  std::unique_ptr<uint8_t[]> buf;
  size_t cap = 0;
  size_t at = 0;
  size_t end = 0;

  size_t size() const { return end - at; }
  uint8_t* data() { return buf.get() + at; }
  // Room for `n` more bytes after what is queued (moved to the front when that is enough).
  uint8_t* Room(size_t n) {
    if (at > 0 && cap - end < n) {
      std::memmove(buf.get(), buf.get() + at, end - at);
      end -= at;
      at = 0;
    }
    if (cap - end < n) {
      std::unique_ptr<uint8_t[]> bigger(new uint8_t[end + n]);
      if (end) std::memcpy(bigger.get(), buf.get(), end);
      buf = std::move(bigger);
      cap = end + n;
    }
    return buf.get() + end;
  }
  void Consume(size_t n) {
    at += n;
    if (at == end) at = end = 0;
  }
  void Free() {
    buf.reset();
    cap = at = end = 0;
  }
};

// One direction of a pair: bytes from `from` to `to`, through a pipe that is taken only while bytes are in
// flight (an idle connection holds no pipe, so 10,000 idle tunnels cost sockets only).
struct SpliceDir {
  int from = -1;
  int to = -1;
  int pipe[2] = {-1, -1};
  size_t inPipe = 0;
  bool pipeForeign = false;  // adopted from another process: closed, never pooled
  std::string pending;  // bytes to write before anything spliced: what Node had read, or a copy fallback's rest
  bool eof = false;     // `from` has no more bytes
  bool shut = false;    // `to` was shut for writing after the last byte
  uint64_t bytes = 0;
  std::atomic<uint64_t>* live = nullptr;  // the pair's tag's counter for this way, if it has a tag

  // Bytes moved: the direction's own count, and its tag's as they move (one relaxed add per call, not per byte).
  void Count(uint64_t n) {
    bytes += n;
    if (live) live->fetch_add(n, std::memory_order_relaxed);
  }

  // A sealed pair's directions: kSeal reads plaintext and writes records, kOpen reads records and writes
  // their plaintext. Their buffers are held only while bytes are in flight.
  enum class Mode : uint8_t { kSplice, kSeal, kOpen } mode = Mode::kSplice;
  std::unique_ptr<RecordCipher> cipher;
  ByteQueue records;  // kSeal: records not yet sent; kOpen: bytes received, not yet opened
  ByteQueue plain;    // kOpen: plaintext Node had already read from the tunnel, sent first
  size_t opened = 0;  // kOpen: the first queued record is open in place: its plaintext's length
  size_t openedSent = 0;
  uint64_t recordsOpened = 0;  // kOpen
  bool held = false;  // kSeal: sends nothing until the peer's first record authenticated (the server end)
  SpliceDir* releases = nullptr;  // kOpen: the direction that its first authenticated record releases
  bool ended = false;             // kSeal: the end record is sealed; kOpen: the end record arrived
};

// Owns its two socket descriptors and any pipe still held (closed here if Finish did not take them).
struct SplicePair {
  SplicePair() = default;
  SplicePair(const SplicePair&) = delete;
  SplicePair& operator=(const SplicePair&) = delete;
  ~SplicePair();

  uint64_t id = 0;
  int fd[2] = {-1, -1};
  SpliceDir dir[2];  // 0: fd[0] → fd[1], 1: fd[1] → fd[0]
  int64_t idleMs = 0;
  int64_t lastActive = 0;
  bool ready = false;  // on the ready list: it stopped at its budget with bytes still to move
  bool fronted = false;  // set up by the front: it holds a slot of `source` there
  std::string source;
  int32_t tag = -1;      // JavaScript's tag (-1: none); reported by detach()
  TagCounters* counters = nullptr;  // the tag's (its `active` counts this pair until it is destroyed)
  bool swapped = false;  // fd[0] is the upstream, fd[1] the client (dir[1] is then the way up)

  // Counts the pair's bytes into `t` from now on (null: nowhere), up and down as `swapped` says.
  void SetTag(TagCounters* t, int32_t number, bool isSwapped) {
    if (counters) counters->active.fetch_sub(1, std::memory_order_relaxed);
    if (t) t->active.fetch_add(1, std::memory_order_relaxed);
    counters = t;
    tag = t ? number : -1;
    swapped = isSwapped;
    dir[0].live = t ? (swapped ? &t->down : &t->up) : nullptr;
    dir[1].live = t ? (swapped ? &t->up : &t->down) : nullptr;
  }
};

struct SpliceDone {
  uint64_t id;
  int err;  // 0: both directions ended; ETIMEDOUT: idle; ECANCELED: aborted; else the socket error
  uint64_t bytes[2];
};

class Splicer : public Napi::ObjectWrap<Splicer> {
 public:
  static Napi::Function Init(Napi::Env env);

  explicit Splicer(const Napi::CallbackInfo& info);
  ~Splicer() override;

 private:
  Napi::Value Add(const Napi::CallbackInfo& info);
  void Abort(const Napi::CallbackInfo& info);
  Napi::Value Stats(const Napi::CallbackInfo& info);
  // Every tag's counters (tags.h), kTagStride numbers per tag, as a Float64Array.
  Napi::Value TagStats(const Napi::CallbackInfo& info);
  // tagReset(tags): zeroes those tags' counters (JavaScript reuses a tag it freed).
  void TagReset(const Napi::CallbackInfo& info);
  void KeepAlive(const Napi::CallbackInfo& info);
  void Close(const Napi::CallbackInfo& info);
  // Hand-over to another process: detach() takes every pair off the thread, unreported, and returns each one's
  // state and descriptors (still owned here); release(ids) closes them once another process holds its own
  // copies, restore(ids) puts them back on the thread. adopt(state, fds) takes a pair detached elsewhere.
  Napi::Value Detach(const Napi::CallbackInfo& info);
  void Release(const Napi::CallbackInfo& info);
  void Restore(const Napi::CallbackInfo& info);
  Napi::Value Adopt(const Napi::CallbackInfo& info);
  void Start(const Napi::CallbackInfo& info);
  void Drop(const Napi::CallbackInfo& info);
  // The front (front.h, front.cc): frontStart(options, report) accepts on the given listeners from then on;
  // frontRoutes(entries, all) updates its table; frontPause(stop) stops or resumes accepting; frontRelease(source)
  // frees the slot of a connection handed to JavaScript; frontStats() reads its counters.
  void FrontStart(const Napi::CallbackInfo& info);
  void FrontRoutes(const Napi::CallbackInfo& info);
  void FrontPause(const Napi::CallbackInfo& info);
  void FrontRelease(const Napi::CallbackInfo& info);
  Napi::Value FrontStats(const Napi::CallbackInfo& info);

  // Thread side.
  void Run();
  void TakeCommands();
  void Pump(SplicePair& p);
  int PumpDir(SpliceDir& d, bool& progress, size_t& budget);
  int CopyDir(SpliceDir& d, bool& moved);
  int SealDir(SpliceDir& d, bool& progress, size_t& budget);
  static int SendQueued(int to, ByteQueue& q, SpliceDir* counted, size_t& budget, bool& progress);
  int OpenDir(SpliceDir& d, bool& progress, size_t& budget);
  void Finish(uint64_t id, int err);
  void ScanIdle(int64_t now);
  // The front's thread side (front.cc).
  void FrontCommands(FrontInbox& in);
  void FrontListen(bool on);
  void FrontAccept(int listener);
  void FrontClassify(std::unique_ptr<FrontSetup> s, const sockaddr_storage& peer);
  void FrontOnEvent(uint64_t key, uint32_t events);
  void FrontPeekHead(FrontSetup& s);
  void FrontChoose(FrontSetup& s, FrontRoute& r);
  void FrontConnect(FrontSetup& s);
  // `endpoint`: the upstream itself failed (not this side, as a socket() that found no descriptor).
  void FrontUpFailed(FrontSetup& s, int err, int status, bool endpoint = true);
  void FrontEstablished(FrontSetup& s, std::string leftover);
  void FrontHand(FrontSetup& s, int32_t failedReport = -2, int err = 0, int status = 0);
  void FrontDrop(uint64_t key);
  void FrontFreeSlot(const std::string& source);
  static bool FrontIsKey(uint64_t key);
  int64_t FrontTimers(int64_t now);
  void FrontFlush();
  void Insert(std::unique_ptr<SplicePair> pair);
  int TakePipe(int out[2]);
  void ReturnPipe(SpliceDir& d);
  void GivePipe(int pipe[2]);
  void Wake();
  // Joins the thread, closes what is left and releases the report function; idempotent, JS thread only.
  void Stop();
  static void CleanupHook(void* self);

  napi_env env_ = nullptr;
  int epfd_ = -1;
  int wakefd_ = -1;
  std::thread thread_;
  std::atomic<bool> stopping_{false};
  std::atomic<int> failed_{0};  // the thread stopped on this error; adds are refused from then on
  bool closed_ = false;
  bool hookAdded_ = false;
  Napi::ThreadSafeFunction tsfn_;

  // Commands from JS to the thread, and results back, under mu_.
  std::mutex mu_;
  std::vector<std::unique_ptr<SplicePair>> adds_;
  std::vector<uint64_t> aborts_;
  std::vector<SpliceDone> done_;
  bool flushQueued_ = false;
  bool detachAsked_ = false;
  std::vector<std::unique_ptr<SplicePair>> detachedNow_;  // from the thread to detach(), under mu_
  std::condition_variable detachCv_;

  // JS thread only: detached pairs until released or restored; adopted pairs parked until started or dropped.
  using PairMap = std::unordered_map<uint64_t, std::unique_ptr<SplicePair>>;
  PairMap detached_;
  PairMap parked_;
  static std::vector<std::unique_ptr<SplicePair>> TakeIds(const Napi::CallbackInfo& info, PairMap& from);
  void Forget(std::vector<std::unique_ptr<SplicePair>>& pairs, bool counted);

  // Thread-only state.
  std::unordered_map<uint64_t, std::unique_ptr<SplicePair>> pairs_;
  std::vector<uint64_t> ready_;  // pairs to pump again without waiting for an edge
  std::vector<int> pool_;        // idle pipes, read end then write end
  std::atomic<uint64_t> nextId_{1};  // 64 bits never wrap
  std::atomic<uint32_t> livePairs_{0};
  std::atomic<uint32_t> livePipes_{0};

  // Per-tag counters: written by the thread (and by add() for bytes it seals at once), read by tagStats().
  TagTable tags_;
  // The optional tag argument at `i`: null for none (undefined, null, -1); throws EINVAL past kMaxTag.
  TagCounters* TagArg(const Napi::CallbackInfo& info, size_t i, const std::string& op, int32_t& tag);

  // The front: commands in (under mu_), its state (thread only), its counters and what it gives JavaScript.
  FrontInbox frontIn_;
  std::unique_ptr<Front> front_;
  std::shared_ptr<FrontCounters> frontCounters_ = std::make_shared<FrontCounters>();
  std::shared_ptr<FrontOutbox> frontOut_ = std::make_shared<FrontOutbox>();
  Napi::ThreadSafeFunction frontTsfn_;
  bool frontStarted_ = false;  // JS thread
};

}  // namespace ecnet
