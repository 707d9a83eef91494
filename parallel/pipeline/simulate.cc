#include "parallel/pipeline/simulate.h"

#include <algorithm>
#include <deque>
#include <map>
#include <tuple>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "runtime/base/check.h"

namespace loom::parallel::pipeline {
namespace {

double Cost(const OpCosts& c, OpKind kind, int stage) {
  if (const auto it = c.by_stage.find({kind, stage}); it != c.by_stage.end()) return it->second;
  switch (kind) {
    case OpKind::kForward:
      return c.forward;
    case OpKind::kBackwardInput:
      return c.backward_input;
    case OpKind::kBackwardWeight:
      return c.backward_weight;
    case OpKind::kOptimizerStep:
      return c.optimizer;
    default:
      return 0.0;
  }
}

}  // namespace

Timeline Simulate(const Schedule& s, const OpCosts& costs) {
  const int ranks = s.placement.ranks;
  Timeline t;
  t.ranks.resize(ranks);
  t.busy.assign(ranks, 0.0);
  t.peak_stashes.assign(ranks, 0);
  t.peak_stash_bytes.assign(ranks, 0.0);
  std::vector<double> now(ranks, 0.0);
  std::vector<int> stashes(ranks, 0);
  std::vector<double> stash_bytes(ranks, 0.0);
  std::map<std::pair<int, int>, double> held;  // (micro-batch, stage) -> its stash's bytes
  auto add = [&](const Instr& i) {
    const auto it = costs.stash_bytes.find({i.kind, i.stage});
    const double bytes = it == costs.stash_bytes.end() ? 0.0 : it->second;
    held[{i.micro_batch, i.stage}] += bytes;
    return bytes;
  };
  std::vector<size_t> pc(ranks, 0);
  // The send time of each message in flight, per channel.
  std::map<std::tuple<int, int, bool>, std::deque<double>> channels;
  for (bool progress = true; progress;) {
    progress = false;
    for (int r = 0; r < ranks; ++r) {
      while (pc[r] < s.ranks[r].size()) {
        const Instr& i = s.ranks[r][pc[r]];
        const bool grad = i.kind == OpKind::kSendGradient || i.kind == OpKind::kRecvGradient;
        double start = now[r], end = now[r];
        if (i.kind == OpKind::kRecvActivation || i.kind == OpKind::kRecvGradient) {
          std::deque<double>& q = channels[{i.peer, r, grad}];
          if (q.empty()) break;  // the sender has not got there yet
          end = std::max(now[r], q.front() + costs.transfer);
          q.pop_front();
        } else if (i.kind == OpKind::kSendActivation || i.kind == OpKind::kSendGradient) {
          channels[{r, i.peer, grad}].push_back(now[r]);
        } else {
          end = start + Cost(costs, i.kind, i.stage);
          t.busy[r] += end - start;
          if (i.kind == OpKind::kForward)
            t.peak_stashes[r] = std::max(t.peak_stashes[r], ++stashes[r]);
          if (i.kind == OpKind::kForward || i.kind == OpKind::kBackwardInput) {
            stash_bytes[r] += add(i);
            t.peak_stash_bytes[r] = std::max(t.peak_stash_bytes[r], stash_bytes[r]);
          }
          if (i.kind == OpKind::kBackwardWeight) {
            --stashes[r];
            stash_bytes[r] -= held[{i.micro_batch, i.stage}];
          }
        }
        t.ranks[r].push_back({i, start, end});
        now[r] = end;
        ++pc[r];
        progress = true;
      }
    }
  }
  for (int r = 0; r < ranks; ++r) {
    LOOM_CHECK_EQ(pc[r], s.ranks[r].size())
        << "Simulate: schedule '" << s.name << "' deadlocks at rank " << r << " (CheckSchedule it)";
    t.step_time = std::max(t.step_time, now[r]);
  }
  double idle = 0.0;
  for (int r = 0; r < ranks; ++r) {
    t.idle_fraction.push_back(t.step_time > 0 ? 1.0 - t.busy[r] / t.step_time : 0.0);
    idle += t.step_time - t.busy[r];
  }
  t.bubble_fraction = t.step_time > 0 ? idle / (ranks * t.step_time) : 0.0;
  return t;
}

std::string Timeline::ToString() const {
  std::string out;
  for (size_t r = 0; r < ranks.size(); ++r) {
    absl::StrAppendFormat(&out, "rank %d (idle %.1f%%, peak stashes %d):", r,
                          100.0 * idle_fraction[r], peak_stashes[r]);
    for (const TimedInstr& ti : ranks[r]) {
      if (!IsCompute(ti.instr.kind)) continue;
      absl::StrAppendFormat(&out, " %s%d.s%d@%g", OpKindName(ti.instr.kind), ti.instr.micro_batch,
                            ti.instr.stage, ti.start);
    }
    absl::StrAppend(&out, "\n");
  }
  absl::StrAppendFormat(&out, "step time %g, bubble %.2f%%\n", step_time, 100.0 * bubble_fraction);
  return out;
}

}  // namespace loom::parallel::pipeline
