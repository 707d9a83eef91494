#include "comm/spin_wait.h"

#include <sched.h>
#include <unistd.h>

#include <algorithm>
#include <thread>

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#endif

namespace loom::comm {
namespace {

constexpr std::chrono::nanoseconds kSpinFor = std::chrono::microseconds(20);
constexpr std::chrono::nanoseconds kYieldFor = std::chrono::milliseconds(2);
constexpr std::chrono::microseconds kMaxSleep{500};

inline void CpuRelax() {
#if defined(__x86_64__) || defined(__i386__)
  _mm_pause();
#elif defined(__aarch64__)
  asm volatile("yield");
#endif
}

}  // namespace

SpinWait::SpinWait(Deadline deadline, std::optional<Clock::time_point> give_up_at,
                   bool oversubscribed)
    : deadline_(deadline),
      give_up_at_(give_up_at),
      oversubscribed_(oversubscribed),
      start_(Clock::now()) {}

bool SpinWait::Oversubscribed(int ranks_on_host) {
  static const long cpus = std::max(1L, sysconf(_SC_NPROCESSORS_ONLN));
  return ranks_on_host > cpus;
}

SpinWait::Verdict SpinWait::CheckClock() {
  const Clock::time_point now = Clock::now();
  elapsed_ = now - start_;
  if (now >= deadline_.at) return kTimedOut;
  if (give_up_at_.has_value() && now >= *give_up_at_) return kGaveUp;
  return kKeepWaiting;
}

SpinWait::Verdict SpinWait::Pause() {
  ++iterations_;
  // Reading the clock costs ~25 ns: while spinning, look only every 16th time.
  if (!oversubscribed_ && elapsed_ < kSpinFor) {
    CpuRelax();
    if (iterations_ % 16 != 0) return kKeepWaiting;
    return CheckClock();
  }
  if (elapsed_ < kYieldFor) {
    sched_yield();
    return CheckClock();
  }
  const Verdict v = CheckClock();
  if (v != kKeepWaiting) return v;
  Clock::time_point wake = Clock::now() + sleep_;
  wake = std::min(wake, deadline_.at);
  if (give_up_at_.has_value()) wake = std::min(wake, *give_up_at_);
  std::this_thread::sleep_until(wake);
  sleep_ = std::min(kMaxSleep, sleep_ * 2);
  return CheckClock();
}

}  // namespace loom::comm
