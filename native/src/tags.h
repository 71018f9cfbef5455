// Per-tag counters: a tag is a small number JavaScript gives a pair (one per service and target cluster), and
// every byte a tagged pair moves is added to its tag's counters as it moves. The splicer's thread writes them,
// JavaScript reads them at any time: each counter is an atomic in storage that never moves (a deque grown at
// its end), and the table's mutex guards only its growth and the readers' walk.
#pragma once

#include <array>
#include <atomic>
#include <cstdint>
#include <deque>
#include <mutex>
#include <vector>

namespace ecnet {

// A tag above this is refused: a runaway number must not cost unbounded memory.
constexpr uint32_t kMaxTag = 1u << 20;

// Setup time (accept to spliced pair) histogram: upper bounds in µs, then +Inf.
constexpr std::array<uint64_t, 13> kSetupBucketsUs = {500,    1000,   2500,    5000,    10000,   25000,  50000,
                                                      100000, 250000, 500000, 1000000, 2500000, 5000000};
constexpr size_t kSetupBuckets = kSetupBucketsUs.size() + 1;

struct TagCounters {
  std::atomic<uint64_t> up{0};    // bytes client → upstream
  std::atomic<uint64_t> down{0};  // bytes upstream → client
  // The front's only:
  std::atomic<uint64_t> opened{0};  // pairs it spliced with this choice
  std::atomic<uint64_t> failed{0};  // attempts that failed there (each endpoint, in turn)
  std::atomic<uint64_t> setupSumUs{0};
  std::array<std::atomic<uint64_t>, kSetupBuckets> setupBuckets{};
  // Tagged pairs alive now (on the thread, parked, or detached and not yet released): a gauge, not a counter.
  std::atomic<uint64_t> active{0};

  static void Add(std::atomic<uint64_t>& c, uint64_t n) { c.fetch_add(n, std::memory_order_relaxed); }
  void ObserveSetup(uint64_t us) {
    size_t b = 0;
    while (b < kSetupBucketsUs.size() && us > kSetupBucketsUs[b]) b++;
    Add(setupBuckets[b], 1);
    Add(setupSumUs, us);
  }
};

// The values of one tag as tagStats() lays them out: up, down, opened, failed, setupSumUs, the buckets, active.
constexpr size_t kTagStride = 5 + kSetupBuckets + 1;

class TagTable {
 public:
  // The tag's counters, grown to hold it; stable for the table's life. Null for a tag above kMaxTag.
  TagCounters* At(uint32_t tag) {
    if (tag > kMaxTag) return nullptr;
    std::lock_guard<std::mutex> lock(mu_);
    while (rows_.size() <= tag) rows_.emplace_back();
    return &rows_[tag];
  }

  // Zeroes a tag's counters (not its `active` gauge) for reuse: JavaScript frees a tag only once no pair and no
  // front choice has used it for a while. A tag never seen is left alone.
  void Reset(uint32_t tag) {
    std::lock_guard<std::mutex> lock(mu_);
    if (tag >= rows_.size()) return;
    TagCounters& t = rows_[tag];
    for (std::atomic<uint64_t>* c : {&t.up, &t.down, &t.opened, &t.failed, &t.setupSumUs}) c->store(0, std::memory_order_relaxed);
    for (auto& b : t.setupBuckets) b.store(0, std::memory_order_relaxed);
  }

  // Every tag's values, kTagStride each, tag by tag (as many tags as the highest one seen, plus one).
  std::vector<double> Snapshot() {
    std::lock_guard<std::mutex> lock(mu_);
    std::vector<double> out;
    out.reserve(rows_.size() * kTagStride);
    for (const TagCounters& t : rows_) {
      for (const std::atomic<uint64_t>* c : {&t.up, &t.down, &t.opened, &t.failed, &t.setupSumUs})
        out.push_back(static_cast<double>(c->load(std::memory_order_relaxed)));
      for (const auto& b : t.setupBuckets) out.push_back(static_cast<double>(b.load(std::memory_order_relaxed)));
      out.push_back(static_cast<double>(t.active.load(std::memory_order_relaxed)));
    }
    return out;
  }

 private:
  std::mutex mu_;
  std::deque<TagCounters> rows_;
};

}  // namespace ecnet
