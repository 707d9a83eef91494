// All-gather: per chunk (part of each rank's block, one step) each rank copies its chunk into its
// slot and its own output in one pass, publishes, and copies every peer's chunk from their slots
// into its output.
#include <algorithm>

#include "comm/shm/algorithms.h"
#include "comm/shm/shm_reduce.h"

namespace loom::comm {

absl::Status AllGatherDirect(ShmGroup& g, const CollectiveArgs& a, ShmProgress& p, ShmWait& w) {
  const int n = g.size(), me = g.rank();
  const size_t es = shm_detail::ElementSize(a);
  const int64_t count = a.fp.count;
  if (count == 0) return absl::OkStatus();
  const shm_detail::Chunks chunks{count, g.MaxStepBytes() / static_cast<int64_t>(es)};
  const bool stream = g.StreamOutput(count * n * static_cast<int64_t>(es));
  // Blocks of at most ShmGroup::kInlineBytes (fingerprints, split plans) ride in the flag line.
  const bool tiny = count * static_cast<int64_t>(es) <= ShmGroup::kInlineBytes;
  const char* in = static_cast<const char*>(a.in);
  char* out = static_cast<char*>(a.out);
  for (; p.chunk < chunks.num(); ++p.chunk, p.phase = 0) {
    const int64_t lo = chunks.lo(p.chunk), len = chunks.len(p.chunk);
    if (p.phase == 0) {
      p.step = g.NextStep(tiny ? 0 : len * static_cast<int64_t>(es));
      char* slot = tiny ? g.Inline(me, p.step.number) : g.Slot(me, p.step);
      char* own = out + (me * count + lo) * es;
      ShmGroup::SharedStore store(g, ShmGroup::kCopy, tiny ? 0 : len * es);
      if (own == in + lo * es) {  // in place
        CopyFast(slot, in + lo * es, len * es, store.stream());
      } else {
        CopyFast2(slot, own, in + lo * es, len * es, store.stream());
      }
      g.Publish(ShmGroup::kArrived, p.step.number);
      p.phase = 1;
    }
    absl::Status s = g.WaitAll(ShmGroup::kArrived, p.step.number, w);
    if (!s.ok()) return s;
    ShmGroup::SharedRead read(g, ShmGroup::kCopy);
    for (int q = 0; q < n; ++q) {
      if (q != me) {
        CopyFast(out + (q * count + lo) * es, tiny ? g.Inline(q, p.step.number) : g.Slot(q, p.step),
                 len * es, stream);
      }
    }
  }
  p.chunk = 0;
  return absl::OkStatus();
}

}  // namespace loom::comm
