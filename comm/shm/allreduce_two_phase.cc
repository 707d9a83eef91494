// Two-phase all-reduce (reduce-scatter + all-gather through shared memory), above the one-shot
// threshold. Per chunk (a ring slot for messages that fit one, else a bulk slot; one step each):
//   1. each rank copies into its slot only the segments its peers reduce (not its own) — publish;
//   2. rank r reduces segment r from its own input and every peer's slot, in rank order, writing
//      its output and the shared result region in the same pass — publish `reduced`;
//   3. each rank copies the peers' reduced segments from the result region to its output.
// Memory traffic per rank ≈ (5 - 2/n)·S. Each segment is reduced once, by one rank, so all ranks
// hold bitwise identical results (and equal to the one-shot's: same order).
#include <algorithm>
#include <vector>

#include "comm/shm/algorithms.h"
#include "comm/shm/shm_reduce.h"

namespace loom::comm {

using shm_detail::PartBegin;

absl::Status AllReduceTwoPhase(ShmGroup& g, const CollectiveArgs& a, ShmProgress& p, ShmWait& w) {
  const int n = g.size(), me = g.rank();
  const size_t es = shm_detail::ElementSize(a);
  const int64_t count = a.fp.count;
  const int64_t bytes = count * static_cast<int64_t>(es);
  const shm_detail::Chunks chunks{count, g.MaxStepBytes() / static_cast<int64_t>(es)};
  const bool stream = g.StreamOutput(bytes);
  const char* in = static_cast<const char*>(a.in);
  char* out = static_cast<char*>(a.out);
  std::vector<const void*> inputs(static_cast<size_t>(n));
  for (; p.chunk < chunks.num(); ++p.chunk, p.phase = 0) {
    const int64_t lo = chunks.lo(p.chunk), len = chunks.len(p.chunk);
    if (p.phase == 0) {
      p.step = g.NextStep(len * static_cast<int64_t>(es));
      char* slot = g.Slot(me, p.step);
      const int64_t mine = PartBegin(len, n, me + 1) - PartBegin(len, n, me);
      ShmGroup::SharedStore store(g, ShmGroup::kCopy, (len - mine) * static_cast<int64_t>(es));
      for (int q = 0; q < n; ++q) {
        if (q == me) continue;
        const int64_t b = PartBegin(len, n, q), e = PartBegin(len, n, q + 1);
        CopyFast(slot + b * es, in + (lo + b) * es, (e - b) * es, store.stream());
      }
      g.Publish(ShmGroup::kArrived, p.step.number);
      p.phase = 1;
    }
    const int64_t mb = PartBegin(len, n, me), me_len = PartBegin(len, n, me + 1) - mb;
    if (p.phase == 1) {
      absl::Status s = g.WaitAll(ShmGroup::kArrived, p.step.number, w);
      if (!s.ok()) return s;
      for (int q = 0; q < n; ++q) {
        inputs[q] = q == me ? in + (lo + mb) * es : g.Slot(q, p.step) + mb * es;
      }
      ShmGroup::SharedRead read(g, ShmGroup::kCopy);  // the peers' slots, stored in phase 0
      ShmGroup::SharedStore store(g, ShmGroup::kReduce, me_len * static_cast<int64_t>(es));
      ReduceInto(a.fp.dtype, a.fp.reduce, inputs.data(), n, out + (lo + mb) * es,
                 g.Result(p.step) + mb * es, me_len, n, stream, store.stream());
      g.Publish(ShmGroup::kReduced, p.step.number);
      p.phase = 2;
    }
    absl::Status s = g.WaitAll(ShmGroup::kReduced, p.step.number, w);
    if (!s.ok()) return s;
    const char* result = g.Result(p.step);
    ShmGroup::SharedRead read(g, ShmGroup::kReduce);
    for (int q = 0; q < n; ++q) {
      if (q == me) continue;
      const int64_t b = PartBegin(len, n, q), e = PartBegin(len, n, q + 1);
      CopyFast(out + (lo + b) * es, result + b * es, (e - b) * es, stream);
    }
  }
  p.chunk = 0;
  return absl::OkStatus();
}

}  // namespace loom::comm
