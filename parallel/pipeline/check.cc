#include "parallel/pipeline/check.h"

#include <deque>
#include <map>
#include <set>
#include <tuple>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

namespace loom::parallel::pipeline {
namespace {

using Op = std::tuple<OpKind, int, int>;  // (kind, micro-batch, stage)

Op OpOf(const Instr& i) { return {i.kind, i.micro_batch, i.stage}; }

class Checker {
 public:
  explicit Checker(const Schedule& s) : s_(s), p_(s.placement) {}

  absl::Status Run() {
    if (static_cast<int>(s_.ranks.size()) != p_.ranks) {
      return Error(absl::StrCat("has ", s_.ranks.size(), " rank lists for ", p_.ranks, " ranks"));
    }
    for (int r = 0; r < p_.ranks; ++r) {
      for (size_t at = 0; at < s_.ranks[r].size(); ++at) {
        if (absl::Status st = CheckPlacement(r, at); !st.ok()) return st;
      }
    }
    if (absl::Status st = CheckComplete(); !st.ok()) return st;
    return Execute();
  }

 private:
  absl::Status Error(const std::string& what) const {
    return absl::InvalidArgumentError(absl::StrCat("schedule '", s_.name, "' ", what));
  }
  absl::Status Bad(int rank, const Instr& i, const std::string& why) const {
    return Error(absl::StrCat("rank ", rank, ": ", i.ToString(), ": ", why));
  }

  // The instruction at (r, at) is well formed and on the right rank.
  absl::Status CheckPlacement(int r, size_t at) {
    const Instr& i = s_.ranks[r][at];
    if (i.kind == OpKind::kOptimizerStep) {
      if (at + 1 != s_.ranks[r].size()) return Bad(r, i, "must be the rank's last instruction");
      return absl::OkStatus();
    }
    const int stages = p_.stages();
    if (i.micro_batch < 0 || i.micro_batch >= s_.micro_batches || i.stage < 0 ||
        i.stage >= stages) {
      return Bad(
          r, i, absl::StrCat("outside ", s_.micro_batches, " micro-batches x ", stages, " stages"));
    }
    if (IsCompute(i.kind)) {
      if (p_.rank_of(i.stage) != r) {
        return Bad(r, i, absl::StrCat("stage ", i.stage, " runs on rank ", p_.rank_of(i.stage)));
      }
      const auto [it, added] = where_.emplace(OpOf(i), std::make_pair(r, at));
      if (!added) {
        return Bad(r, i,
                   absl::StrCat("appears twice (also rank ", it->second.first, ", instruction ",
                                it->second.second, ")"));
      }
      return absl::OkStatus();
    }
    // Transfers: from the producing stage's rank to its consumer's.
    const bool activation = i.kind == OpKind::kSendActivation || i.kind == OpKind::kRecvActivation;
    const int to_stage = activation ? i.stage + 1 : i.stage - 1;
    if (to_stage < 0 || to_stage >= stages) return Bad(r, i, "has no stage to go to");
    const bool send = i.kind == OpKind::kSendActivation || i.kind == OpKind::kSendGradient;
    const int from = p_.rank_of(i.stage), to = p_.rank_of(to_stage);
    if ((send && (r != from || i.peer != to)) || (!send && (r != to || i.peer != from))) {
      return Bad(r, i, absl::StrCat("goes from rank ", from, " to rank ", to));
    }
    if (from == to) return Bad(r, i, "both stages are on this rank: nothing to transfer");
    return absl::OkStatus();
  }

  absl::Status CheckComplete() const {
    for (int mb = 0; mb < s_.micro_batches; ++mb) {
      for (int stage = 0; stage < p_.stages(); ++stage) {
        for (OpKind k : {OpKind::kForward, OpKind::kBackwardInput, OpKind::kBackwardWeight}) {
          if (!where_.contains({k, mb, stage})) {
            return Error(
                absl::StrCat("rank ", p_.rank_of(stage), ": no ", Instr{k, mb, stage}.ToString()));
          }
        }
      }
    }
    for (int r = 0; r < p_.ranks; ++r) {
      if (s_.ranks[r].empty() || s_.ranks[r].back().kind != OpKind::kOptimizerStep) {
        return Error(absl::StrCat("rank ", r, ": no optimizer step at the end"));
      }
    }
    return absl::OkStatus();
  }

  // Whether rank r can run `i` now; a fatal problem (one that waiting cannot solve) in `fatal`;
  // what it waits for in `waits`.
  bool Ready(int r, const Instr& i, absl::Status& fatal, std::string& waits) {
    const int mb = i.micro_batch, s = i.stage;
    // A dependency on this rank must be done already: rank r runs its list in order.
    auto local = [&](OpKind k, int stage) {
      if (done_.contains({k, mb, stage})) return true;
      fatal = Bad(r, i,
                  absl::StrCat("dependency violated: needs ", Instr{k, mb, stage}.ToString(),
                               ", which this rank runs later"));
      return false;
    };
    // A dependency on another rank arrives through a receive this rank ran before.
    auto received = [&](OpKind recv, int stage) {
      if (received_[r].contains({recv, mb, stage})) return true;
      fatal = Bad(r, i,
                  absl::StrCat("needs ", OpKindName(recv), "(mb ", mb, ", stage ", stage,
                               ") before it on this rank"));
      return false;
    };
    auto input = [&](OpKind producer, OpKind recv, int stage) {
      return p_.rank_of(stage) == r ? local(producer, stage) : received(recv, stage);
    };
    switch (i.kind) {
      case OpKind::kForward:
        return s == 0 || input(OpKind::kForward, OpKind::kRecvActivation, s - 1);
      case OpKind::kBackwardInput:
        return local(OpKind::kForward, s) &&
               (s + 1 == p_.stages() ||
                input(OpKind::kBackwardInput, OpKind::kRecvGradient, s + 1));
      case OpKind::kBackwardWeight:
        return local(OpKind::kBackwardInput, s);
      case OpKind::kSendActivation:
        return local(OpKind::kForward, s);
      case OpKind::kSendGradient:
        return local(OpKind::kBackwardInput, s);
      case OpKind::kRecvActivation:
      case OpKind::kRecvGradient: {
        const std::deque<std::pair<int, int>>& q = channels_[Channel(i.peer, r, i.kind)];
        if (q.empty()) {
          waits = absl::StrCat("waits at ", i.ToString(), " for rank ", i.peer, " to send it");
          return false;
        }
        if (q.front() != std::make_pair(mb, s)) {
          fatal =
              Bad(r, i,
                  absl::StrCat("crossed send/recv: rank ", i.peer, " sends mb ", q.front().first,
                               " of stage ", q.front().second, " first on this channel"));
          return false;
        }
        return true;
      }
      case OpKind::kOptimizerStep:
        for (const Instr& other : s_.ranks[r]) {
          if (other.kind == OpKind::kBackwardWeight && !done_.contains(OpOf(other))) {
            fatal = Bad(r, i, absl::StrCat("comes before ", other.ToString()));
            return false;
          }
        }
        return true;
    }
    return false;
  }

  static std::tuple<int, int, bool> Channel(int from, int to, OpKind kind) {
    return {from, to, kind == OpKind::kSendGradient || kind == OpKind::kRecvGradient};
  }

  void Apply(int r, const Instr& i) {
    switch (i.kind) {
      case OpKind::kSendActivation:
      case OpKind::kSendGradient:
        channels_[Channel(r, i.peer, i.kind)].emplace_back(i.micro_batch, i.stage);
        break;
      case OpKind::kRecvActivation:
      case OpKind::kRecvGradient:
        channels_[Channel(i.peer, r, i.kind)].pop_front();
        received_[r].insert(OpOf(i));
        break;
      default:
        done_.insert(OpOf(i));
    }
  }

  absl::Status Execute() {
    received_.assign(p_.ranks, {});
    std::vector<size_t> pc(p_.ranks, 0);
    for (;;) {
      bool progress = false, finished = true;
      std::vector<std::string> stuck;
      for (int r = 0; r < p_.ranks; ++r) {
        const std::vector<Instr>& list = s_.ranks[r];
        std::string waits;
        while (pc[r] < list.size()) {
          absl::Status fatal;
          if (!Ready(r, list[pc[r]], fatal, waits)) break;
          Apply(r, list[pc[r]++]);
          progress = true;
        }
        if (pc[r] < list.size()) {
          absl::Status fatal;
          Ready(r, list[pc[r]], fatal, waits);
          if (!fatal.ok()) return fatal;
          finished = false;
          stuck.push_back(absl::StrCat("rank ", r, " ", waits));
        }
      }
      if (finished) return absl::OkStatus();
      if (!progress) return Error(absl::StrCat("deadlocks: ", absl::StrJoin(stuck, "; ")));
    }
  }

  const Schedule& s_;
  const Placement& p_;
  std::map<Op, std::pair<int, size_t>> where_;
  std::set<Op> done_;
  std::vector<std::set<Op>> received_;
  std::map<std::tuple<int, int, bool>, std::deque<std::pair<int, int>>> channels_;
};

}  // namespace

absl::Status CheckSchedule(const Schedule& schedule) { return Checker(schedule).Run(); }

}  // namespace loom::parallel::pipeline
