// Work: the handle of one asynchronous communication call.
//
//   std::shared_ptr<Work> w = comm.AllReduce(grads, grads, ReduceOp::kSum);
//   ComputeSomethingElse();            // the collective progresses meanwhile
//   LOOM_RETURN_IF_ERROR(w->Wait());   // buffers may be read / reused after this
//
// Thread-safe. A Work completes exactly once, with OK or the error that poisoned its communicator.
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <mutex>

#include "absl/status/status.h"
#include "runtime/base/clock.h"

namespace loom::comm {

class Work {
 public:
  Work() = default;
  Work(const Work&) = delete;
  Work& operator=(const Work&) = delete;

  // Blocks until the call finished; returns its status.
  absl::Status Wait();
  // True once the call finished (successfully or not); never blocks.
  bool Test() const { return done_.load(std::memory_order_acquire); }
  // The final status; only meaningful once Test() is true.
  absl::Status status() const;
  // When the call finished: microseconds of the steady clock (one clock for every process of a
  // host, as pipeline traces use); only meaningful once Test() is true.
  int64_t completed_us() const { return completed_us_; }

  // For backends and the communicator: marks the call finished. Called once.
  void Complete(absl::Status status);
  // Complete for a Work no other thread can reach yet (the caller-thread fast path finishes a
  // call before handing its Work out): no lock, no wake-up.
  void CompleteUnshared(absl::Status status) {
    status_ = std::move(status);
    completed_us_ = runtime::SteadyMicros();
    done_.store(true, std::memory_order_release);
  }

 private:
  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::atomic<bool> done_{false};
  absl::Status status_;
  int64_t completed_us_ = 0;
};

}  // namespace loom::comm
