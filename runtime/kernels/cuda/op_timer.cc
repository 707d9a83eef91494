// Device time per kernel entry point (LOOM_CUDA_PROFILE=1, cuda_twins.h op_begin / op_end /
// op_report): a pair of events on the default stream around each top-level entry point that runs
// a twin, their elapsed times summed per op once the device has passed them. For finding where a
// step's device time goes (train_gpt prints the table at the end); the events cost a little, and
// work other threads queue on the default stream meanwhile is counted in the op it overlaps.
#include "runtime/kernels/cuda/op_timer.h"

#include <cuda_runtime.h>

#include <algorithm>
#include <cstdlib>
#include <map>
#include <mutex>
#include <string>
#include <string_view>
#include <vector>

#include "runtime/base/check.h"

namespace loom::runtime::kernels::cuda {
namespace {

void Check(cudaError_t e, const char* what) {
  LOOM_CHECK(e == cudaSuccess) << "LOOM_CUDA_PROFILE: " << what << ": " << cudaGetErrorString(e);
}

class OpTimer {
 public:
  static OpTimer& Get() {
    static OpTimer* timer = new OpTimer();  // never destroyed, as the allocators
    return *timer;
  }

  void* Begin(std::string_view op) {
    auto* t = new Timing{std::string(op), Take(), Take()};
    Check(cudaEventRecord(t->start, nullptr), "event record");
    return t;
  }

  void End(void* token) {
    auto* t = static_cast<Timing*>(token);
    Check(cudaEventRecord(t->stop, nullptr), "event record");
    std::lock_guard<std::mutex> lock(mu_);
    pending_.push_back(t);
    if (pending_.size() >= kMaxPending) FlushLocked();  // bounded: a wait for the device
  }

  std::vector<DeviceOpTime> Report() {
    std::lock_guard<std::mutex> lock(mu_);
    FlushLocked();
    std::vector<DeviceOpTime> out;
    for (const auto& [op, total] : totals_) out.push_back(total);
    std::sort(out.begin(), out.end(),
              [](const DeviceOpTime& a, const DeviceOpTime& b) { return a.ms > b.ms; });
    return out;
  }

 private:
  static constexpr size_t kMaxPending = 4096;
  struct Timing {
    std::string op;
    cudaEvent_t start, stop;
  };

  cudaEvent_t Take() {
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (!free_.empty()) {
        cudaEvent_t e = free_.back();
        free_.pop_back();
        return e;
      }
    }
    cudaEvent_t e = nullptr;
    Check(cudaEventCreate(&e), "event create");
    return e;
  }

  void FlushLocked() {
    for (Timing* t : pending_) {
      Check(cudaEventSynchronize(t->stop), "event synchronize");
      float ms = 0.0f;
      Check(cudaEventElapsedTime(&ms, t->start, t->stop), "elapsed time");
      DeviceOpTime& total = totals_[t->op];
      total.op = t->op;
      ++total.calls;
      total.ms += ms;
      free_.push_back(t->start);
      free_.push_back(t->stop);
      delete t;
    }
    pending_.clear();
  }

  std::mutex mu_;
  std::vector<Timing*> pending_;
  std::vector<cudaEvent_t> free_;
  std::map<std::string, DeviceOpTime> totals_;
};

}  // namespace

void RegisterOpTimer(CudaTwinTable& twins) {
  const char* profile = std::getenv("LOOM_CUDA_PROFILE");
  if (profile == nullptr || std::string_view(profile) != "1") return;
  twins.op_begin = [](std::string_view op) { return OpTimer::Get().Begin(op); };
  twins.op_end = [](void* token) { OpTimer::Get().End(token); };
  twins.op_report = [] { return OpTimer::Get().Report(); };
}

}  // namespace loom::runtime::kernels::cuda
