// SpinWait: the back-off every loom wait on a peer uses (shared-memory flags, MPI requests):
// spin briefly, then yield the core, then sleep in growing steps, always bounded by the call's
// Deadline, and optionally by a shorter "patience" for the caller-thread fast path. Ranks that
// share cores (more ranks than cores) skip the spinning so they let each other run.
//
//   SpinWait wait(deadline, /*give_up_at=*/std::nullopt, /*oversubscribed=*/false);
//   while (flag.load(std::memory_order_acquire) < step) {
//     if (wait.Pause() != SpinWait::kKeepWaiting) return TimedOut();
//   }
#pragma once

#include <chrono>
#include <cstdint>
#include <optional>

#include "comm/backend.h"

namespace loom::comm {

class SpinWait {
 public:
  using Clock = std::chrono::steady_clock;
  enum Verdict { kKeepWaiting, kGaveUp, kTimedOut };

  // Spinning lasts ~20 µs, yielding until ~2 ms, then sleeps of 20 µs growing to 500 µs.
  SpinWait(Deadline deadline, std::optional<Clock::time_point> give_up_at, bool oversubscribed);

  // Call after each unsuccessful check: pauses (spin, yield or sleep) and says whether to check
  // again, or that the patience (kGaveUp) or the deadline (kTimedOut) has passed.
  Verdict Pause();

  // How long this wait has lasted, as of its last clock reading.
  std::chrono::nanoseconds elapsed() const { return elapsed_; }

  // True if `ranks` processes that each may spin would exceed this host's online CPUs.
  static bool Oversubscribed(int ranks_on_host);

 private:
  Verdict CheckClock();

  Deadline deadline_;
  std::optional<Clock::time_point> give_up_at_;
  bool oversubscribed_;
  Clock::time_point start_;
  uint64_t iterations_ = 0;
  std::chrono::microseconds sleep_{20};
  std::chrono::nanoseconds elapsed_{0};
};

}  // namespace loom::comm
