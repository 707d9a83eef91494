#include "comm/local/local_backend.h"

#include <algorithm>
#include <condition_variable>
#include <cstring>
#include <map>
#include <mutex>
#include <numeric>
#include <tuple>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "comm/exchange.h"
#include "comm/reduce.h"
#include "runtime/base/check.h"

namespace loom::comm {
namespace {

// State shared by the ranks of one local group.
struct LocalGroup {
  explicit LocalGroup(int n)
      : size(n),
        arrived(n, 0),
        staging{std::vector<std::vector<char>>(n), std::vector<std::vector<char>>(n)} {}

  const int size;
  std::mutex mu;
  std::condition_variable cv;
  // arrived[r] = number of calls rank r has staged; call c uses staging[c % 2].
  std::vector<uint64_t> arrived;
  std::vector<std::vector<char>> staging[2];
  // Buffered point-to-point messages keyed by (src, dst, tag), FIFO.
  std::map<std::tuple<int, int, int>, std::deque<std::vector<char>>> mailbox;
  // Split rendezvous: (split number, color) -> the child group.
  std::map<std::pair<uint64_t, int>, std::shared_ptr<LocalGroup>> children;
};

std::string Ranks(const std::vector<int>& ranks) { return absl::StrJoin(ranks, ", "); }

class LocalBackend : public Backend {
 public:
  LocalBackend(std::shared_ptr<LocalGroup> group, int rank)
      : group_(std::move(group)), rank_(rank) {}

  int rank() const override { return rank_; }
  int size() const override { return group_->size; }
  std::string name() const override { return "local"; }

  absl::Status Run(const CollectiveArgs& args, Deadline deadline) override {
    switch (args.fp.op) {
      case CollectiveOp::kSend:
        return SendMessage(args);
      case CollectiveOp::kRecv:
        return RecvMessage(args, deadline);
      default:
        return RunCollective(args, deadline);
    }
  }

  absl::StatusOr<std::unique_ptr<Backend>> Split(int color, int key, Deadline deadline) override {
    // Exchange (color, key) with a collective, then the first member to arrive creates the group.
    absl::StatusOr<SplitPlan> planned = ExchangeSplitPlan(
        color, key, rank_, size(),
        [&](const CollectiveArgs& gather) { return RunCollective(gather, deadline); });
    if (!planned.ok()) return planned.status();
    const SplitPlan& plan = *planned;
    std::shared_ptr<LocalGroup> child;
    {
      std::lock_guard<std::mutex> lock(group_->mu);
      auto& slot = group_->children[{split_count_, color}];
      if (slot == nullptr) slot = std::make_shared<LocalGroup>(plan.size);
      child = slot;
    }
    ++split_count_;
    return std::unique_ptr<Backend>(new LocalBackend(child, plan.rank));
  }

 private:
  // Waits (with the group lock held via `lock`) until `ready()`; DeadlineExceeded naming
  // `missing()` otherwise.
  template <typename Ready, typename Missing>
  absl::Status WaitFor(std::unique_lock<std::mutex>& lock, Deadline deadline, Ready ready,
                       Missing missing) {
    while (!ready()) {
      if (group_->cv.wait_until(lock, deadline.at) == std::cv_status::timeout && !ready()) {
        return absl::DeadlineExceededError(missing());
      }
    }
    return absl::OkStatus();
  }

  std::vector<int> RanksBehind(uint64_t calls) const {
    std::vector<int> behind;
    for (int r = 0; r < group_->size; ++r) {
      if (group_->arrived[r] < calls) behind.push_back(r);
    }
    return behind;
  }

  absl::Status RunCollective(const CollectiveArgs& args, Deadline deadline) {
    LocalGroup& g = *group_;
    const uint64_t call = calls_++;
    std::vector<char> staged = StageInput(args, size());
    {
      std::unique_lock<std::mutex> lock(g.mu);
      // Slot call % 2 was last read during call - 2; every rank is done with it once all have
      // staged call - 1.
      absl::Status s = WaitFor(
          lock, deadline, [&] { return RanksBehind(call).empty(); },
          [&] { return absl::StrCat("waiting for rank(s) ", Ranks(RanksBehind(call))); });
      if (!s.ok()) return s;
      g.staging[call % 2][rank_] = std::move(staged);
      g.arrived[rank_] = call + 1;
      g.cv.notify_all();
      s = WaitFor(
          lock, deadline, [&] { return RanksBehind(call + 1).empty(); },
          [&] { return absl::StrCat("waiting for rank(s) ", Ranks(RanksBehind(call + 1))); });
      if (!s.ok()) return s;
    }
    // Everyone staged this call; slot call % 2 is stable until every rank stages call + 1.
    std::vector<const char*> inputs(static_cast<size_t>(size()));
    for (int r = 0; r < size(); ++r) inputs[r] = g.staging[call % 2][r].data();
    return ComputeOutput(args, rank_, size(), inputs);
  }

  absl::Status SendMessage(const CollectiveArgs& args) {
    const size_t bytes = static_cast<size_t>(args.fp.count) * runtime::DTypeSize(args.fp.dtype);
    std::vector<char> msg(static_cast<const char*>(args.in),
                          static_cast<const char*>(args.in) + bytes);
    {
      std::lock_guard<std::mutex> lock(group_->mu);
      group_->mailbox[{rank_, args.fp.root, args.tag}].push_back(std::move(msg));
    }
    group_->cv.notify_all();
    return absl::OkStatus();
  }

  absl::Status RecvMessage(const CollectiveArgs& args, Deadline deadline) {
    std::unique_lock<std::mutex> lock(group_->mu);
    auto& queue = group_->mailbox[{args.fp.root, rank_, args.tag}];
    absl::Status s = WaitFor(
        lock, deadline, [&] { return !queue.empty(); },
        [&] {
          return absl::StrCat("waiting for rank(s) ", args.fp.root, " (tag ", args.tag, ")");
        });
    if (!s.ok()) return s;
    const std::vector<char> msg = std::move(queue.front());
    queue.pop_front();
    const size_t bytes = static_cast<size_t>(args.fp.count) * runtime::DTypeSize(args.fp.dtype);
    if (msg.size() != bytes) {
      return absl::InvalidArgumentError(absl::StrCat("message from rank ", args.fp.root, " has ",
                                                     msg.size(), " bytes, the receive buffer ",
                                                     bytes));
    }
    std::memcpy(args.out, msg.data(), bytes);
    return absl::OkStatus();
  }

  std::shared_ptr<LocalGroup> group_;
  int rank_;
  uint64_t calls_ = 0;
  uint64_t split_count_ = 0;
};

}  // namespace

std::vector<std::unique_ptr<Communicator>> MakeLocalWorld(int size, CommOptions options) {
  LOOM_CHECK_GE(size, 1) << "MakeLocalWorld";
  auto group = std::make_shared<LocalGroup>(size);
  std::vector<std::unique_ptr<Communicator>> world;
  for (int r = 0; r < size; ++r) {
    world.push_back(
        std::make_unique<Communicator>(std::make_unique<LocalBackend>(group, r), options));
  }
  return world;
}

}  // namespace loom::comm
