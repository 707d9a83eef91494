#include <array>
#include <deque>

#include "parallel/pipeline/schedules/schedules.h"

namespace loom::parallel::pipeline {
namespace {

// One rank's list, built phase by phase: phase 0 is its stage on the way down the V (stage r),
// phase 1 the one on the way back (stage 2p - 1 - r). Each phase runs its micro-batches in
// order; a B either runs its W right after it or defers it to a queue that W() empties in order
// (DualPipe's WeightGradStore).
class RankList {
 public:
  RankList(const Placement& placement, int rank)
      : stage_{placement.stage_of(rank, 0), placement.stage_of(rank, 1)} {}

  void F(int phase) { list_.push_back({OpKind::kForward, next_f_[phase]++, stage_[phase]}); }
  void B(int phase, bool defer_w = false) {
    const int mb = next_b_[phase]++;
    list_.push_back({OpKind::kBackwardInput, mb, stage_[phase]});
    const Instr w{OpKind::kBackwardWeight, mb, stage_[phase]};
    if (defer_w) {
      deferred_.push_back(w);
    } else {
      list_.push_back(w);
    }
  }
  void W() {
    list_.push_back(deferred_.front());
    deferred_.pop_front();
  }
  // DualPipe overlaps this pair (one micro-batch's forward with another's backward): marked as a
  // pair, whose transfers come before and after both; the executor may run them together.
  void FB(int forward_phase, int backward_phase) {
    F(forward_phase);
    list_.back().paired = true;
    B(backward_phase);
  }
  std::vector<Instr> Finish() {
    list_.push_back({OpKind::kOptimizerStep});
    return std::move(list_);
  }

 private:
  std::array<int, 2> stage_;
  std::array<int, 2> next_f_{}, next_b_{};
  std::deque<Instr> deferred_;
  std::vector<Instr> list_;
};

}  // namespace

// DualPipe-V (DeepSeek's DualPipe cut in half: deepseek-ai/DualPipe, dualpipev.py): the V
// placement, and per rank r of p, with m >= 2p micro-batches, eight phases —
//   1. 2(p - r - 1) forwards of phase 0            (fill the way down)
//   2. r + 1 pairs: forward phase 0, forward phase 1
//   3. p - r - 1 times: B phase 1 (W deferred), W, F phase 1
//   4. m - 2p + r + 1 times: F0 with B1, then F1 with B0 (the steady state, W right after B)
//   5. p - r - 1 times: B phase 1, then F1 with B0
//   6. r + 1 times: B1, B0 — the second half with W deferred
//   7. p - r - 1 times: a deferred W, then B0 (its W deferred)
//   8. the r + 1 deferred Ws left.
// The last rank's first steady-state pair runs F0 before B1 as the others do (DualPipe sends in
// between; the order of compute is the same).
Schedule DualPipeV(const ScheduleOptions& o) {
  const int p = o.ranks, m = o.micro_batches;
  Schedule s{.name = "dualpipe-v",
             .placement = {.kind = Placement::Kind::kV, .ranks = p, .chunks = 2},
             .micro_batches = m,
             .ranks = std::vector<std::vector<Instr>>(p)};
  for (int r = 0; r < p; ++r) {
    RankList l(s.placement, r);
    for (int i = 0; i < 2 * (p - r - 1); ++i) l.F(0);
    for (int i = 0; i < r + 1; ++i) {
      l.F(0);
      l.F(1);
    }
    for (int i = 0; i < p - r - 1; ++i) {
      l.B(1, /*defer_w=*/true);
      l.W();
      l.F(1);
    }
    for (int i = 0; i < m - 2 * p + r + 1; ++i) {
      l.FB(0, 1);
      l.FB(1, 0);
    }
    for (int i = 0; i < p - r - 1; ++i) {
      l.B(1);
      l.FB(1, 0);
    }
    bool defer = false;
    for (int i = 0; i < r + 1; ++i) {
      if (i == (r + 1) / 2 && r % 2 == 1) defer = true;
      l.B(1, defer);
      if (i == (r + 1) / 2 && r % 2 == 0) defer = true;
      l.B(0, defer);
    }
    for (int i = 0; i < p - r - 1; ++i) {
      l.W();
      l.B(0, /*defer_w=*/true);
    }
    for (int i = 0; i < r + 1; ++i) l.W();
    s.ranks[r] = l.Finish();
  }
  InsertTransfers(s);
  return s;
}

}  // namespace loom::parallel::pipeline
