#include "parallel/pipeline/schedules/schedules.h"

namespace loom::parallel::pipeline {

// ZB-H1: 1F1B's placement, with W split from B and run where 1F1B would idle: the bubble drops
// to a third of 1F1B's when F, B and W cost the same. At most p - r micro-batches per rank between
// F and B, as 1F1B (the paper's peak-memory accounting: B frees the activations only it needs);
// what W still reads (each linear layer's input and output gradient) is held for at most
// 2p - r - 1 micro-batches: the fewest that keep the bubble at a third (holding p - r + k, the
// list scheduler's bubble falls from 2/3 of 1F1B's at k = 0 to 1/3 at k = p - 1).
Schedule ZeroBubbleH1(const ScheduleOptions& o) {
  std::vector<int> until_b, until_w;
  for (int r = 0; r < o.ranks; ++r) {
    until_b.push_back(o.ranks - r);
    until_w.push_back(2 * o.ranks - r - 1);
  }
  return GreedyZeroBubble("zb-h1", {.ranks = o.ranks, .chunks = 1}, o.micro_batches, until_b,
                          until_w);
}

}  // namespace loom::parallel::pipeline
