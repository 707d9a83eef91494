// Barrier: one step with no data; every rank publishes and waits for all.
#include "comm/shm/algorithms.h"

namespace loom::comm {

absl::Status BarrierFlags(ShmGroup& g, ShmProgress& p, ShmWait& w) {
  if (p.phase == 0) {
    p.step = g.NextStep(0);
    g.Publish(ShmGroup::kArrived, p.step.number);
    p.phase = 1;
  }
  absl::Status s = g.WaitAll(ShmGroup::kArrived, p.step.number, w);
  if (!s.ok()) return s;
  p.phase = 0;
  return absl::OkStatus();
}

}  // namespace loom::comm
