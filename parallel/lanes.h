// Lanes: streams of work on one rank that take turns, handing over wherever one would wait for
// communication, so that one lane computes while another's collective is in flight (DeepSeek's
// dual micro-batch overlap: one half of a micro-batch runs attention while the other half's MoE
// all-to-all travels).
//
//   Lanes lanes;                                       // one helper thread per extra lane
//   lanes.Run({[&] { Train(half_a); }, [&] { Train(half_b); }}, /*interleave=*/true);
//   // ... and inside, where a lane is about to wait for a collective it issued:
//   YieldLane();                                       // no-op outside Lanes::Run
//
// Exactly one lane runs at a time (the others are parked), so the lanes' code needs no locks and
// computes exactly what it would compute alone. YieldLane hands over to the next lane that has not
// finished, in round-robin order, and comes back when the turn returns: lane i's k-th stretch
// between hand-overs runs right after lane i-1's k-th. The hand-overs depend only on where the
// lanes yield, never on timing, so ranks that run the same lanes issue their collectives in the
// same order. With interleave false the lanes run one after another on the calling thread (every
// YieldLane does nothing): the baseline, with the same arithmetic when the lanes are independent.
//
// Lane 0 runs on the calling thread, lane i > 0 on helper thread i - 1, the same thread on every
// Run (thread-local caches, e.g. oneDNN's primitives, stay warm). Helpers log as the caller's
// rank. A lane must not call Run itself.
#pragma once

#include <condition_variable>
#include <functional>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

namespace loom::parallel {

class Lanes {
 public:
  Lanes() = default;
  ~Lanes();
  Lanes(const Lanes&) = delete;
  Lanes& operator=(const Lanes&) = delete;

  // Runs every lane to completion; returns when all have finished.
  void Run(const std::vector<std::function<void()>>& lanes, bool interleave);

  // Hands the turn on (see above); called through YieldLane().
  void Yield(int lane);

 private:
  void StartHelpers(int count);
  void HelperLoop(int lane);
  void RunLane(int lane);
  // The next lane after `lane` that has not finished, or -1. Caller holds mu_.
  int NextUnfinished(int lane) const;
  void WaitForTurn(std::unique_lock<std::mutex>& lock, int lane);

  std::mutex mu_;
  std::condition_variable cv_;
  std::vector<std::thread> helpers_;
  const std::vector<std::function<void()>>* work_ = nullptr;
  std::vector<bool> finished_;
  int turn_ = -1;       // the lane that may run; -1: none
  int generation_ = 0;  // incremented by each Run, so helpers start each run once
  int rank_ = -1;       // the caller's log rank, for the helpers
  bool stopping_ = false;
};

// Inside Lanes::Run with interleave: hand the turn to the next unfinished lane and wait for it to
// come back. Elsewhere: nothing.
void YieldLane();

}  // namespace loom::parallel
