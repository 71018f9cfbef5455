// The front: accepting and setting up connections on the splicer's thread, so that the common case of a new
// connection costs no JavaScript. Two modes:
// - proxy (the node proxy): accept → original destination (taken from the datapath's connection map) → the
//   route's precomputed choices → connect (a local endpoint, or a gateway) → for a gateway, the CONNECT
//   request and its 200 → a spliced pair;
// - gateway: accept → the request head, peeked → a CONNECT for a service the catalog table holds → connect an
//   endpoint (the next on a refusal) → the head consumed, 200 sent → a spliced pair.
// Whatever the front cannot finish (no table yet, no route, a refused or failed candidate, any other request)
// goes to JavaScript with what the front learnt, untouched otherwise: JavaScript keeps the whole policy, the
// retries and the error answers. The tables are pushed from JavaScript; the front only applies their choices.
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <unordered_map>
#include <vector>

#include <sys/socket.h>

#include "tags.h"

namespace ecnet {

// One way to serve a route: a gateway (with the CONNECT head to send it) or endpoints connected directly.
struct FrontChoice {
  // JavaScript's index for this choice (successes and failures are reported by it; its pairs are tagged with
  // it); -1: none. Nothing here reads more into it: a local choice may have one as well as a gateway.
  int32_t report = -1;
  TagCounters* tag = nullptr;  // the report index's counters (the splicer's table), if it has one
  uint32_t weight = 1;
  int64_t current = 0;  // smooth weighted round robin
  // Shared with the setups that took this choice: a setup outlives a table change, and a big endpoint list is
  // not copied per connection.
  std::shared_ptr<const std::vector<sockaddr_storage>> addrs;
  uint32_t next = 0;  // rotation over addrs
  std::string head;   // sent first, then a "200" answer is awaited; empty: the connection is the upstream
};

struct FrontRoute {
  std::vector<FrontChoice> choices;
  int64_t total = 0;
};

struct FrontConfig {
  bool gateway = false;
  uint32_t mark = 0;
  uint32_t idleMs = 0;
  uint32_t setupMs = 5000;    // a gateway's answer to CONNECT (proxy), from the connect on
  uint32_t connectMs = 2000;  // a direct connect (local endpoint, or the gateway's endpoint)
  uint32_t headerMs = 5000;   // gateway: a request head
  uint32_t maxTotal = 0;
  uint32_t maxPerSource = 0;
  int connMap = -1;  // proxy: the datapath's connection map (a dup, owned by the front)
  uint32_t connValueSize = 24;
  uint64_t staleNs = 0;  // proxy: an entry recorded longer ago than this is not used (0: no check)
  int64_t clockOffsetNs = 0;  // this process's CLOCK_MONOTONIC minus bpf_ktime_get_ns()'s (a time namespace)
  std::vector<int> listeners;  // dups, owned by the front
};

// Counters read by JavaScript while the thread writes them.
struct FrontCounters {
  std::atomic<uint64_t> accepted{0};
  std::atomic<uint64_t> notRedirected{0};
  std::atomic<uint64_t> limited{0};
  std::atomic<uint64_t> spliced{0};
  std::atomic<uint64_t> handed{0};    // given to JavaScript
  std::atomic<uint64_t> failures{0};  // candidates that failed here (each then handed over)
  std::atomic<uint64_t> failuresDropped{0};  // gateway: endpoint failures not reported (a batch was full)
  std::atomic<uint32_t> setups{0};    // being set up now
  std::atomic<uint32_t> open{0};      // holding a slot: setting up, handed over and not yet released, spliced
};

// A connection the front gives to JavaScript: its descriptor (JavaScript owns it now) and what was learnt.
struct FrontHanded {
  int fd = -1;
  std::string source;       // 16 bytes: the client's address, IPv4-mapped (its slot is freed with it)
  std::string destination;  // proxy: the connection map's value (24 bytes); empty if not looked up
  int32_t failedReport = -2;  // the choice that failed: its report index (-1: a local one); -2: none failed
  int failedErrno = 0;
  int failedStatus = 0;
  int64_t ageMs = 0;  // since it was accepted
};

// A connection being set up on the thread.
struct FrontSetup {
  enum class Stage : uint8_t { kHead, kConnect, kSend, kAwait } stage = Stage::kHead;
  uint64_t key = 0;
  int client = -1;
  int up = -1;
  bool clientPolled = false;
  std::string source;
  std::string destination;
  std::string routeKey;
  int32_t report = -1;    // the choice taken: its report index, counters, addresses, head and first address
  TagCounters* tag = nullptr;
  std::shared_ptr<const std::vector<sockaddr_storage>> addrs;
  std::string head;
  uint32_t start = 0;
  uint32_t tried = 0;     // addresses tried (endpoints are tried in turn; a gateway once)
  size_t sent = 0;        // of the choice's head
  std::string buf;        // proxy: the gateway's answer so far
  size_t headLen = 0;     // gateway: the request head's length (consumed once the endpoint answers)
  int64_t deadline = 0;
  int64_t accepted = 0;  // when (CLOCK_MONOTONIC ms): JavaScript's time budgets go on from there
  uint64_t acceptedNs = 0;  // the same, finer: the setup time observed per tag

  ~FrontSetup();
};

struct Front {
  FrontConfig cfg;
  std::unordered_map<std::string, FrontRoute> routes;
  bool ready = false;  // a whole table arrived
  bool paused = false;
  std::unordered_map<uint64_t, std::unique_ptr<FrontSetup>> setups;
  std::unordered_map<std::string, uint32_t> bySource;
  uint64_t nextSetup = 1;
  int64_t retryListenAt = 0;  // accept failed for want of descriptors: listening again from then
  int64_t nextDeadline = 0;   // the earliest setup deadline set since the last look (0: none)

  // A setup's deadline: the loop looks at the setups again by then.
  void Due(int64_t at) {
    if (!nextDeadline || at < nextDeadline) nextDeadline = at;
  }

  ~Front();
};

// From JavaScript to the thread, under the splicer's mutex.
struct FrontInbox {
  std::unique_ptr<Front> start;
  std::vector<std::pair<std::string, std::unique_ptr<FrontRoute>>> routes;  // null: removed
  bool replaceAll = false;
  int pause = 0;  // 1: stop accepting, 2: accept again, 3: stop and close the listening sockets
  std::vector<std::string> released;
};

// From the thread to JavaScript, under its own mutex (shared with the report function, which may outlive the
// splicer object by a few queued calls).
// Gateway: an endpoint that failed to connect (also when the next one answered), for JavaScript to eject.
struct FrontEndpointFailure {
  int32_t report;
  sockaddr_storage addr;
  int err;
};

struct FrontOutbox {
  // Endpoint failures kept per batch; more are counted (FrontCounters::failuresDropped), not kept.
  static constexpr size_t kMaxFailures = 1024;
  std::mutex mu;
  std::vector<FrontHanded> handed;
  std::unordered_map<int32_t, uint32_t> successes;
  std::vector<FrontEndpointFailure> failures;
  bool queued = false;
};

}  // namespace ecnet
