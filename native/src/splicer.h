// Splicer: moves the bytes of connected TCP socket pairs both ways inside the kernel (splice(2) through a
// pipe), on one thread of its own, so that the proxy's and the gateway's tunnels cost no copy into Node and
// no JavaScript per chunk. It owns the sockets (its own dups), the pipes and the thread; each pair ends once,
// reported to the JS callback with its byte counts.
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <unordered_map>
#include <vector>

#include "common.h"

namespace ecnet {

// One direction of a pair: bytes from `from` to `to`, through a pipe that is taken only while bytes are in
// flight (an idle connection holds no pipe, so 10,000 idle tunnels cost sockets only).
struct SpliceDir {
  int from = -1;
  int to = -1;
  int pipe[2] = {-1, -1};
  size_t inPipe = 0;
  std::string pending;  // bytes to write before anything spliced: what Node had read, or a copy fallback's rest
  bool eof = false;     // `from` has no more bytes
  bool shut = false;    // `to` was shut for writing after the last byte
  uint64_t bytes = 0;
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
  void KeepAlive(const Napi::CallbackInfo& info);
  void Close(const Napi::CallbackInfo& info);

  // Thread side.
  void Run();
  void TakeCommands();
  void Pump(SplicePair& p);
  int PumpDir(SpliceDir& d, bool& progress, size_t& budget);
  int CopyDir(SpliceDir& d, bool& moved);
  void Finish(uint64_t id, int err);
  void ScanIdle(int64_t now);
  int TakePipe(int out[2]);
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

  // Thread-only state.
  std::unordered_map<uint64_t, std::unique_ptr<SplicePair>> pairs_;
  std::vector<uint64_t> ready_;  // pairs to pump again without waiting for an edge
  std::vector<int> pool_;        // idle pipes, read end then write end
  uint64_t nextId_ = 1;          // JS thread only; 64 bits never wrap
  std::atomic<uint32_t> livePairs_{0};
  std::atomic<uint32_t> livePipes_{0};
};

}  // namespace ecnet
