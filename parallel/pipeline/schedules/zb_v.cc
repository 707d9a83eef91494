#include "parallel/pipeline/schedules/schedules.h"

namespace loom::parallel::pipeline {

// ZB-V: two chunks per rank in a V (rank r holds stages r and 2p - 1 - r, so rank 0 has the first
// and the last), at most 2p chunk stashes per rank (1F1B's peak in bytes, each chunk being half a
// stage): with enough micro-batches the bubble is close to zero.
Schedule ZeroBubbleV(const ScheduleOptions& o) {
  return GreedyZeroBubble("zb-v", {.kind = Placement::Kind::kV, .ranks = o.ranks, .chunks = 2},
                          o.micro_batches, std::vector<int>(o.ranks, 2 * o.ranks),
                          std::vector<int>(o.ranks, 2 * o.ranks));
}

}  // namespace loom::parallel::pipeline
