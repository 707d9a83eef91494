#include "comm/shm/algorithms.h"
#include "comm/shm/shm_reduce.h"

namespace loom::comm::shm_detail {

void StagePeerBlocks(ShmGroup& g, ShmProgress& p, const char* in, int64_t count, int64_t lo,
                     int64_t len, size_t es) {
  const int n = g.size(), me = g.rank();
  p.step = g.NextStep(len * n * static_cast<int64_t>(es));
  char* slot = g.Slot(me, p.step);
  ShmGroup::SharedStore store(g, ShmGroup::kCopy, (n - 1) * len * es);
  for (int q = 0; q < n; ++q) {
    if (q != me) {
      CopyFast(slot + q * len * es, in + (q * count + lo) * es, len * es, store.stream());
    }
  }
  g.Publish(ShmGroup::kArrived, p.step.number);
  p.phase = 1;
}

}  // namespace loom::comm::shm_detail
