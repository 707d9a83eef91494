#include "comm/local/local_p2p.h"

#include <algorithm>
#include <condition_variable>
#include <cstring>
#include <deque>
#include <map>
#include <mutex>
#include <tuple>
#include <utility>

#include "absl/strings/str_cat.h"
#include "runtime/base/check.h"

namespace loom::comm {
namespace {

// The mailboxes of one group of thread-ranks.
struct Mailboxes {
  explicit Mailboxes(int n) : size(n), arrived(static_cast<size_t>(n)) {}

  const int size;
  std::mutex mu;
  // arrived[r] is signalled when a message for rank r is queued.
  std::vector<std::condition_variable> arrived;
  // FIFO per (source, destination, tag).
  std::map<std::tuple<int, int, int>, std::deque<std::vector<char>>> queues;
  // Split rendezvous: (split number, members) -> the child group and how many members still have
  // to pick it up.
  std::map<std::pair<uint64_t, std::vector<int>>, std::pair<std::shared_ptr<Mailboxes>, int>>
      children;
};

class LocalPointToPoint : public PointToPoint {
 public:
  LocalPointToPoint(std::shared_ptr<Mailboxes> group, int rank)
      : group_(std::move(group)), rank_(rank) {}

  int rank() const override { return rank_; }
  int size() const override { return group_->size; }

  absl::Status SendRecv(const void* send, size_t send_bytes, int dst, void* recv, size_t recv_bytes,
                        int src, int tag, Deadline deadline) override {
    if (absl::Status s = CheckPeer(dst, "send to"); !s.ok()) return s;
    if (absl::Status s = CheckPeer(src, "receive from"); !s.ok()) return s;
    if (tag < 0) return absl::InvalidArgumentError(absl::StrCat("negative tag ", tag));
    Mailboxes& g = *group_;
    if (dst != kNoPeer) {
      const char* data = static_cast<const char*>(send);
      std::vector<char> message(data, data + send_bytes);
      {
        std::lock_guard<std::mutex> lock(g.mu);
        g.queues[{rank_, dst, tag}].push_back(std::move(message));
      }
      g.arrived[dst].notify_all();
    }
    if (src == kNoPeer) return absl::OkStatus();
    std::vector<char> message;
    {
      std::unique_lock<std::mutex> lock(g.mu);
      std::deque<std::vector<char>>& queue = g.queues[{src, rank_, tag}];
      if (!g.arrived[rank_].wait_until(lock, deadline.at, [&] { return !queue.empty(); })) {
        return absl::DeadlineExceededError(absl::StrCat(
            "waiting for rank(s) ", src, " (receive, tag ", tag, ", ", recv_bytes, " bytes)"));
      }
      message = std::move(queue.front());
      queue.pop_front();
    }
    if (message.size() != recv_bytes) {
      return absl::InvalidArgumentError(absl::StrCat("the message from rank ", src, " (tag ", tag,
                                                     ") has ", message.size(),
                                                     " bytes, the receive expects ", recv_bytes));
    }
    if (recv_bytes > 0) std::memcpy(recv, message.data(), recv_bytes);
    return absl::OkStatus();
  }

  absl::StatusOr<std::unique_ptr<PointToPoint>> Split(const std::vector<int>& members,
                                                      Deadline) override {
    const auto self = std::find(members.begin(), members.end(), rank_);
    if (self == members.end()) {
      return absl::InvalidArgumentError(
          absl::StrCat("Split: rank ", rank_, " is not among the members of its own group"));
    }
    for (int m : members) {
      if (m < 0 || m >= size()) {
        return absl::InvalidArgumentError(
            absl::StrCat("Split: member ", m, " is outside [0, ", size(), ")"));
      }
    }
    std::shared_ptr<Mailboxes> child;
    {
      std::lock_guard<std::mutex> lock(group_->mu);
      const auto key = std::make_pair(splits_, members);
      auto& [group, pending] = group_->children[key];
      if (group == nullptr) {
        group = std::make_shared<Mailboxes>(static_cast<int>(members.size()));
        pending = static_cast<int>(members.size());
      }
      child = group;
      if (--pending == 0) group_->children.erase(key);
    }
    ++splits_;
    return std::unique_ptr<PointToPoint>(
        new LocalPointToPoint(std::move(child), static_cast<int>(self - members.begin())));
  }

 private:
  absl::Status CheckPeer(int peer, absl::string_view what) const {
    if (peer == kNoPeer) return absl::OkStatus();
    if (peer < 0 || peer >= size() || peer == rank_) {
      return absl::InvalidArgumentError(absl::StrCat("rank ", rank_, " cannot ", what, " rank ",
                                                     peer, " in a group of ", size()));
    }
    return absl::OkStatus();
  }

  std::shared_ptr<Mailboxes> group_;
  const int rank_;
  uint64_t splits_ = 0;
};

}  // namespace

std::vector<std::unique_ptr<PointToPoint>> MakeLocalPointToPoint(int size) {
  LOOM_CHECK_GE(size, 1) << "MakeLocalPointToPoint";
  auto group = std::make_shared<Mailboxes>(size);
  std::vector<std::unique_ptr<PointToPoint>> ranks;
  for (int r = 0; r < size; ++r) ranks.push_back(std::make_unique<LocalPointToPoint>(group, r));
  return ranks;
}

std::vector<std::unique_ptr<Communicator>> MakeLocalRingWorld(int size, CommOptions options,
                                                              P2POptions p2p_options) {
  std::vector<std::unique_ptr<Communicator>> world;
  for (std::unique_ptr<PointToPoint>& p2p : MakeLocalPointToPoint(size)) {
    world.push_back(
        std::make_unique<Communicator>(MakeP2PBackend(std::move(p2p), p2p_options), options));
  }
  return world;
}

}  // namespace loom::comm
