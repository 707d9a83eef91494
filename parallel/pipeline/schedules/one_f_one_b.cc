#include <algorithm>

#include "parallel/pipeline/schedules/schedules.h"

namespace loom::parallel::pipeline {

// Rank r runs p - r - 1 warm-up forwards, then alternates one forward and one full backward
// (B, W), then drains the backwards: at most p - r micro-batches in flight.
Schedule OneFOneB(const ScheduleOptions& o) {
  const int p = o.ranks, m = o.micro_batches;
  Schedule s{.name = "1f1b",
             .placement = {.ranks = p, .chunks = 1},
             .micro_batches = m,
             .ranks = std::vector<std::vector<Instr>>(p)};
  for (int r = 0; r < p; ++r) {
    std::vector<Instr>& list = s.ranks[r];
    const int warmup = std::min(p - r - 1, m);
    auto backward = [&](int mb) {
      list.push_back({OpKind::kBackwardInput, mb, r});
      list.push_back({OpKind::kBackwardWeight, mb, r});
    };
    for (int mb = 0; mb < warmup; ++mb) list.push_back({OpKind::kForward, mb, r});
    for (int i = 0; i < m - warmup; ++i) {
      list.push_back({OpKind::kForward, warmup + i, r});
      backward(i);
    }
    for (int mb = m - warmup; mb < m; ++mb) backward(mb);
    list.push_back({OpKind::kOptimizerStep});
  }
  InsertTransfers(s);
  return s;
}

}  // namespace loom::parallel::pipeline
