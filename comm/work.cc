#include "comm/work.h"

#include "runtime/base/check.h"

namespace loom::comm {

absl::Status Work::Wait() {
  // Calls finished on the caller's thread (the communicator's fast path) are already done: the
  // status was written before the release store of done_ and is never written again.
  if (done_.load(std::memory_order_acquire)) return status_;
  std::unique_lock<std::mutex> lock(mu_);
  cv_.wait(lock, [this] { return done_.load(std::memory_order_acquire); });
  return status_;
}

absl::Status Work::status() const {
  std::lock_guard<std::mutex> lock(mu_);
  return status_;
}

void Work::Complete(absl::Status status) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    LOOM_CHECK(!done_.load()) << "Work completed twice";
    status_ = std::move(status);
    completed_us_ = runtime::SteadyMicros();
    done_.store(true, std::memory_order_release);
  }
  cv_.notify_all();
}

}  // namespace loom::comm
