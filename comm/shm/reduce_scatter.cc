// Reduce-scatter: rank r needs block r reduced over all ranks. Per chunk (a range of elements
// within every block, one step): each rank copies the chunk of every block but its own into its
// slot and publishes; rank r then reduces its block's chunk from its own input and every peer's
// slot, in rank order, straight into its output. One synchronisation per chunk.
#include <algorithm>
#include <vector>

#include "comm/shm/algorithms.h"
#include "comm/shm/shm_reduce.h"

namespace loom::comm {

absl::Status ReduceScatterDirect(ShmGroup& g, const CollectiveArgs& a, ShmProgress& p, ShmWait& w) {
  const int n = g.size(), me = g.rank();
  const size_t es = shm_detail::ElementSize(a);
  const int64_t count = a.fp.count;  // one block
  if (count == 0) return absl::OkStatus();
  const shm_detail::Chunks chunks = shm_detail::BlockChunks(g, count, es);
  const bool stream = g.StreamOutput(count * static_cast<int64_t>(es));
  const char* in = static_cast<const char*>(a.in);
  char* out = static_cast<char*>(a.out);
  std::vector<const void*> inputs(static_cast<size_t>(n));
  for (; p.chunk < chunks.num(); ++p.chunk, p.phase = 0) {
    const int64_t lo = chunks.lo(p.chunk), len = chunks.len(p.chunk);
    if (p.phase == 0) shm_detail::StagePeerBlocks(g, p, in, count, lo, len, es);
    absl::Status s = g.WaitAll(ShmGroup::kArrived, p.step.number, w);
    if (!s.ok()) return s;
    for (int q = 0; q < n; ++q) {
      inputs[q] = q == me ? in + (me * count + lo) * es : g.Slot(q, p.step) + me * len * es;
    }
    ShmGroup::SharedRead read(g, ShmGroup::kCopy);
    ReduceInto(a.fp.dtype, a.fp.reduce, inputs.data(), n, out + lo * es, nullptr, len, n, stream);
  }
  p.chunk = 0;
  return absl::OkStatus();
}

}  // namespace loom::comm
