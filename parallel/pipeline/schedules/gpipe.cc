#include "parallel/pipeline/schedules/schedules.h"

namespace loom::parallel::pipeline {

Schedule GPipe(const ScheduleOptions& o) {
  Schedule s{.name = "gpipe",
             .placement = {.ranks = o.ranks, .chunks = 1},
             .micro_batches = o.micro_batches,
             .ranks = std::vector<std::vector<Instr>>(o.ranks)};
  for (int r = 0; r < o.ranks; ++r) {
    std::vector<Instr>& list = s.ranks[r];
    for (int mb = 0; mb < o.micro_batches; ++mb) list.push_back({OpKind::kForward, mb, r});
    for (int mb = 0; mb < o.micro_batches; ++mb) {
      list.push_back({OpKind::kBackwardInput, mb, r});
      list.push_back({OpKind::kBackwardWeight, mb, r});
    }
    list.push_back({OpKind::kOptimizerStep});
  }
  InsertTransfers(s);
  return s;
}

}  // namespace loom::parallel::pipeline
