// One-shot all-reduce, for small messages (latency-bound): every rank copies its whole input to
// its ring slot and publishes it; after one wait every rank reduces all ranks' inputs in rank
// order itself. One synchronisation, (n + 3)·S bytes of memory traffic per rank.
#include <vector>

#include "comm/shm/algorithms.h"
#include "comm/shm/shm_reduce.h"

namespace loom::comm {

absl::Status AllReduceOneShot(ShmGroup& g, const CollectiveArgs& a, ShmProgress& p, ShmWait& w) {
  const int n = g.size(), me = g.rank();
  const int64_t count = a.fp.count;
  const int64_t bytes = count * static_cast<int64_t>(shm_detail::ElementSize(a));
  if (count == 0) return absl::OkStatus();
  if (p.phase == 0) {
    const bool inline_data = bytes <= ShmGroup::kInlineBytes;
    p.step = g.NextStep(inline_data ? 0 : bytes);  // callers keep one-shot messages small
    CopyFast(inline_data ? g.Inline(me, p.step.number) : g.Slot(me, p.step), a.in, bytes);
    g.Publish(ShmGroup::kArrived, p.step.number);
    p.phase = 1;
  }
  absl::Status s = g.WaitAll(ShmGroup::kArrived, p.step.number, w);
  if (!s.ok()) return s;
  std::vector<const void*> inputs(static_cast<size_t>(n));
  // This rank's own contribution is read from its input (still in cache); the bytes equal its
  // slot's, so every rank reduces identical values in the same order.
  for (int r = 0; r < n; ++r) {
    inputs[r] = r == me                           ? a.in
                : bytes <= ShmGroup::kInlineBytes ? g.Inline(r, p.step.number)
                                                  : g.Slot(r, p.step);
  }
  ReduceInto(a.fp.dtype, a.fp.reduce, inputs.data(), n, a.out, nullptr, count, n);
  p.phase = 0;
  return absl::OkStatus();
}

}  // namespace loom::comm
