// Broadcast: per chunk (one slot's worth, one step) the root copies the chunk into its slot and
// every rank publishes; the others copy it out of the root's slot. Only the root stores, so its
// store flavour follows its own store times (ShmGroup::kRootCopy).
#include <algorithm>

#include "comm/shm/algorithms.h"
#include "comm/shm/shm_reduce.h"

namespace loom::comm {

absl::Status BroadcastFromRoot(ShmGroup& g, const CollectiveArgs& a, ShmProgress& p, ShmWait& w) {
  const int me = g.rank(), root = a.fp.root;
  const size_t es = shm_detail::ElementSize(a);
  const int64_t count = a.fp.count;
  if (count == 0) return absl::OkStatus();
  const shm_detail::Chunks chunks{count, g.MaxStepBytes() / static_cast<int64_t>(es)};
  const bool stream = g.StreamOutput(count * static_cast<int64_t>(es));
  const bool tiny = count * static_cast<int64_t>(es) <= ShmGroup::kInlineBytes;
  for (; p.chunk < chunks.num(); ++p.chunk, p.phase = 0) {
    const int64_t lo = chunks.lo(p.chunk), len = chunks.len(p.chunk);
    if (p.phase == 0) {
      p.step = g.NextStep(tiny ? 0 : len * static_cast<int64_t>(es));
      if (me == root) {
        ShmGroup::SharedStore store(g, ShmGroup::kRootCopy, tiny ? 0 : len * es);
        CopyFast(tiny ? g.Inline(me, p.step.number) : g.Slot(me, p.step),
                 static_cast<const char*>(a.in) + lo * es, len * es, store.stream());
      }
      // Every rank publishes, data or not: it says this rank is done with the slots it read.
      g.Publish(ShmGroup::kArrived, p.step.number);
      p.phase = 1;
    }
    absl::Status s = g.WaitAll(ShmGroup::kArrived, p.step.number, w);
    if (!s.ok()) return s;
    if (me != root) {
      CopyFast(static_cast<char*>(a.out) + lo * es,
               tiny ? g.Inline(root, p.step.number) : g.Slot(root, p.step), len * es, stream);
    }
  }
  p.chunk = 0;
  return absl::OkStatus();
}

}  // namespace loom::comm
