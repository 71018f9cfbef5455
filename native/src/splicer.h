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
  std::string pending;  // bytes Node had already read from `from`, written before anything spliced
  bool eof = false;     // `from` has no more bytes
  bool shut = false;    // `to` was shut for writing after the last byte
  uint64_t bytes = 0;
};

struct SplicePair {
  uint32_t id = 0;
  int fd[2] = {-1, -1};
  SpliceDir dir[2];  // 0: fd[0] → fd[1], 1: fd[1] → fd[0]
  int64_t idleMs = 0;
  int64_t lastActive = 0;
};

struct SpliceDone {
  uint32_t id;
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
  void Close(const Napi::CallbackInfo& info);

  // Thread side.
  void Run();
  void TakeCommands();
  void Pump(SplicePair& p);
  int PumpDir(SplicePair& p, SpliceDir& d, bool& progress);
  void Finish(uint32_t id, int err);
  void ScanIdle(int64_t now);
  int TakePipe(int out[2]);
  void GivePipe(int pipe[2]);
  void Stop();

  int epfd_ = -1;
  int wakefd_ = -1;
  std::thread thread_;
  std::atomic<bool> stopping_{false};
  bool closed_ = false;
  Napi::ThreadSafeFunction tsfn_;

  // Commands from JS to the thread, and results back, under mu_.
  std::mutex mu_;
  std::vector<std::unique_ptr<SplicePair>> adds_;
  std::vector<uint32_t> aborts_;
  std::vector<SpliceDone> done_;
  bool flushQueued_ = false;

  // Thread-only state.
  std::unordered_map<uint32_t, std::unique_ptr<SplicePair>> pairs_;
  std::vector<int> pool_;  // idle pipes, read end then write end
  uint32_t nextId_ = 1;    // JS thread only
  std::atomic<uint32_t> livePairs_{0};
  std::atomic<uint32_t> livePipes_{0};
};

}  // namespace ecnet
