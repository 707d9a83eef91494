// All-to-all: per chunk (a range of elements within every block, one step) each rank copies the
// chunk of every block but its own into its slot and publishes; rank r then copies block r's
// chunk from every peer's slot, and its own block from its input.
#include <algorithm>

#include "comm/shm/algorithms.h"
#include "comm/shm/shm_reduce.h"

namespace loom::comm {

absl::Status AllToAllDirect(ShmGroup& g, const CollectiveArgs& a, ShmProgress& p, ShmWait& w) {
  const int n = g.size(), me = g.rank();
  const size_t es = shm_detail::ElementSize(a);
  const int64_t count = a.fp.count;  // one block
  if (count == 0) return absl::OkStatus();
  const shm_detail::Chunks chunks = shm_detail::BlockChunks(g, count, es);
  const bool stream = g.StreamOutput(count * n * static_cast<int64_t>(es));
  const char* in = static_cast<const char*>(a.in);
  char* out = static_cast<char*>(a.out);
  for (; p.chunk < chunks.num(); ++p.chunk, p.phase = 0) {
    const int64_t lo = chunks.lo(p.chunk), len = chunks.len(p.chunk);
    if (p.phase == 0) shm_detail::StagePeerBlocks(g, p, in, count, lo, len, es);
    absl::Status s = g.WaitAll(ShmGroup::kArrived, p.step.number, w);
    if (!s.ok()) return s;
    // In place (in == out) the peers' blocks were copied out above, before they are overwritten.
    shm_detail::CopyBytes(out + (me * count + lo) * es, in + (me * count + lo) * es, len * es);
    ShmGroup::SharedRead read(g, ShmGroup::kCopy);
    for (int q = 0; q < n; ++q) {
      if (q != me) {
        CopyFast(out + (q * count + lo) * es, g.Slot(q, p.step) + me * len * es, len * es, stream);
      }
    }
  }
  p.chunk = 0;
  return absl::OkStatus();
}

}  // namespace loom::comm
