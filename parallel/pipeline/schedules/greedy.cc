#include <limits>

#include "parallel/pipeline/schedules/schedules.h"
#include "runtime/base/check.h"

namespace loom::parallel::pipeline {

Schedule GreedyZeroBubble(const std::string& name, const Placement& placement, int micro_batches,
                          const std::vector<int>& until_b, const std::vector<int>& until_w) {
  const int p = placement.ranks, m = micro_batches, stages = placement.stages();
  constexpr int kNever = std::numeric_limits<int>::max();
  // When each op finished (kNever: not yet; -1 on `started` marks one taken).
  std::vector<std::vector<int>> f(m, std::vector<int>(stages, kNever)), b = f, w = f;
  std::vector<int> free_at(p, 0), before_b(p, 0), before_w(p, 0);
  Schedule s{.name = name,
             .placement = placement,
             .micro_batches = m,
             .ranks = std::vector<std::vector<Instr>>(p)};
  int remaining = m * stages;  // W's not yet taken
  for (int t = 0; remaining > 0; ++t) {
    LOOM_CHECK_LT(t, 16 * m * stages + 16) << name << ": the list scheduler made no progress";
    for (int r = 0; r < p; ++r) {
      if (free_at[r] > t) continue;
      int kind = -1, best_mb = -1, best_stage = -1;
      // B: the earliest micro-batch whose gradient has arrived (deeper stage on a tie).
      for (int mb = 0; mb < m && kind < 0; ++mb) {
        for (int c = placement.chunks - 1; c >= 0; --c) {
          const int st = placement.stage_of(r, c);
          if (b[mb][st] == kNever && f[mb][st] <= t && (st + 1 == stages || b[mb][st + 1] <= t)) {
            kind = 1, best_mb = mb, best_stage = st;
            break;
          }
        }
      }
      // F: the deepest stage first (finishes micro-batches), then the earliest micro-batch.
      if (kind < 0 && before_b[r] < until_b[r] && before_w[r] < until_w[r]) {
        for (int c = placement.chunks - 1; c >= 0 && kind < 0; --c) {
          const int st = placement.stage_of(r, c);
          for (int mb = 0; mb < m; ++mb) {
            if (f[mb][st] == kNever && (st == 0 || f[mb][st - 1] <= t)) {
              kind = 0, best_mb = mb, best_stage = st;
              break;
            }
          }
        }
      }
      // W: the oldest pending one.
      if (kind < 0) {
        int oldest = kNever;
        for (int mb = 0; mb < m; ++mb) {
          for (int c = 0; c < placement.chunks; ++c) {
            const int st = placement.stage_of(r, c);
            if (w[mb][st] == kNever && b[mb][st] <= t && b[mb][st] < oldest) {
              oldest = b[mb][st], kind = 2, best_mb = mb, best_stage = st;
            }
          }
        }
      }
      if (kind < 0) continue;  // idle this step
      const OpKind kinds[] = {OpKind::kForward, OpKind::kBackwardInput, OpKind::kBackwardWeight};
      s.ranks[r].push_back({kinds[kind], best_mb, best_stage});
      std::vector<std::vector<int>>& done = kind == 0 ? f : kind == 1 ? b : w;
      done[best_mb][best_stage] = t + 1;
      free_at[r] = t + 1;
      if (kind == 0) ++before_b[r], ++before_w[r];
      if (kind == 1) --before_b[r];
      if (kind == 2) --before_w[r], --remaining;
    }
  }
  for (auto& list : s.ranks) list.push_back({OpKind::kOptimizerStep});
  InsertTransfers(s);
  return s;
}

}  // namespace loom::parallel::pipeline
