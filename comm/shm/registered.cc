// The steps the registered algorithms (all_gather_registered.cc, allreduce_registered.cc) share:
// agreeing that every rank's buffers are in the arena, and the closing step after which every
// rank knows its peers have written into its buffers.
#include <cstring>

#include "comm/shm/algorithms.h"

namespace loom::comm::shm_detail {

absl::Status AgreeOnArena(ShmGroup& g, const int64_t* mine, int k, ShmProgress& p, ShmWait& w) {
  if (p.phase == 0) {
    p.step = g.NextStep(0);
    std::memcpy(g.Inline(g.rank(), p.step.number), mine, k * sizeof(int64_t));
    g.Publish(ShmGroup::kArrived, p.step.number);
    p.phase = 1;
  }
  absl::Status s = g.WaitAll(ShmGroup::kArrived, p.step.number, w);
  if (!s.ok()) return s;
  p.decision_step = p.step.number;
  p.variant = 1;
  for (int q = 0; q < g.size(); ++q) {
    for (int i = 0; i < k; ++i) {
      if (ArenaOffset(g, p, q, i) < 0) p.variant = 2;
    }
  }
  p.phase = 0;
  return absl::OkStatus();
}

int64_t ArenaOffset(const ShmGroup& g, const ShmProgress& p, int rank, int index) {
  int64_t offset;
  std::memcpy(&offset, g.Inline(rank, p.decision_step) + index * sizeof(int64_t), sizeof(offset));
  return offset;
}

absl::Status FinishRegistered(ShmGroup& g, ShmProgress& p, ShmWait& w) {
  if (p.phase == 0) {
    p.step = g.NextStep(0);
    g.Publish(ShmGroup::kArrived, p.step.number);
    p.phase = 1;
  }
  return g.WaitAll(ShmGroup::kArrived, p.step.number, w);
}

}  // namespace loom::comm::shm_detail
