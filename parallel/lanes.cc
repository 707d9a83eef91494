#include "parallel/lanes.h"

#include <algorithm>

#include "runtime/base/check.h"
#include "runtime/base/logging.h"
#include "runtime/parallel.h"

namespace loom::parallel {
namespace {

thread_local Lanes* t_lanes = nullptr;  // the Lanes whose lane this thread is running
thread_local int t_lane = -1;

}  // namespace

Lanes::~Lanes() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stopping_ = true;
  }
  cv_.notify_all();
  for (std::thread& t : helpers_) t.join();
}

void Lanes::Run(const std::vector<std::function<void()>>& lanes, bool interleave) {
  LOOM_CHECK(t_lanes == nullptr) << "Lanes::Run called from inside a lane";
  if (!interleave || lanes.size() <= 1) {
    for (const std::function<void()>& lane : lanes) lane();
    return;
  }
  StartHelpers(static_cast<int>(lanes.size()) - 1);
  {
    std::lock_guard<std::mutex> lock(mu_);
    work_ = &lanes;
    finished_.assign(lanes.size(), false);
    rank_ = base::CurrentRank();
    turn_ = 0;
    ++generation_;
  }
  cv_.notify_all();
  RunLane(0);
  std::unique_lock<std::mutex> lock(mu_);
  cv_.wait(lock, [&] {
    return std::all_of(finished_.begin(), finished_.end(), [](bool f) { return f; });
  });
  work_ = nullptr;
}

void Lanes::StartHelpers(int count) {
  while (static_cast<int>(helpers_.size()) < count) {
    const int lane = static_cast<int>(helpers_.size()) + 1;
    helpers_.emplace_back([this, lane] { HelperLoop(lane); });
  }
}

void Lanes::HelperLoop(int lane) {
  int seen = 0;
  while (true) {
    {
      std::unique_lock<std::mutex> lock(mu_);
      cv_.wait(lock, [&] { return stopping_ || generation_ != seen; });
      if (stopping_) return;
      seen = generation_;
      if (work_ == nullptr || lane >= static_cast<int>(work_->size())) continue;
      base::SetThreadRank(rank_);
    }
    // OpenMP's default team size is per thread: give this one the process's thread count too.
    runtime::SetNumThreads(runtime::NumThreads());
    RunLane(lane);
  }
}

void Lanes::RunLane(int lane) {
  t_lanes = this;
  t_lane = lane;
  {
    std::unique_lock<std::mutex> lock(mu_);
    WaitForTurn(lock, lane);
  }
  (*work_)[lane]();
  {
    std::lock_guard<std::mutex> lock(mu_);
    finished_[lane] = true;
    turn_ = NextUnfinished(lane);
  }
  cv_.notify_all();
  t_lanes = nullptr;
  t_lane = -1;
}

void Lanes::Yield(int lane) {
  std::unique_lock<std::mutex> lock(mu_);
  const int next = NextUnfinished(lane);
  if (next < 0) return;  // every other lane has finished: keep going
  turn_ = next;
  cv_.notify_all();
  WaitForTurn(lock, lane);
}

int Lanes::NextUnfinished(int lane) const {
  const int n = static_cast<int>(finished_.size());
  for (int i = 1; i < n; ++i) {
    const int next = (lane + i) % n;
    if (!finished_[next]) return next;
  }
  return -1;
}

void Lanes::WaitForTurn(std::unique_lock<std::mutex>& lock, int lane) {
  cv_.wait(lock, [&] { return turn_ == lane; });
}

void YieldLane() {
  if (t_lanes != nullptr) t_lanes->Yield(t_lane);
}

}  // namespace loom::parallel
