// All-to-all from inputs in the arena: when every rank's input lies in the communicator's shared
// arena (ShmArena), rank r copies block r of every peer's input straight into its output — one
// copy per block, as with Open MPI's single-copy (CMA) path, where the staged path copies each
// block into the sender's ring and out again. One inline step carries each rank's input offset
// (-1: elsewhere, or in place); if any is -1, every rank takes AllToAllDirect. A closing step keeps
// the inputs as they are until every rank has copied its blocks out.
#include "comm/shm/algorithms.h"
#include "comm/shm/shm_reduce.h"
#include "runtime/base/status_macros.h"

namespace loom::comm {

absl::Status AllToAllRegistered(ShmGroup& g, const ShmArena& arena, const CollectiveArgs& a,
                                ShmProgress& p, ShmWait& w) {
  const int n = g.size(), me = g.rank();
  const int64_t block = a.fp.count * static_cast<int64_t>(shm_detail::ElementSize(a));
  if (block == 0) return absl::OkStatus();
  if (p.variant == 0) {
    // In place, a rank's output would overwrite the input its peers are reading.
    const int64_t mine = a.in == a.out ? -1 : arena.OffsetOf(a.in, block * n);
    LOOM_RETURN_IF_ERROR(shm_detail::AgreeOnArena(g, &mine, 1, block * n, p, w));
    if (p.variant == 1) {
      const bool stream = g.StreamOutput(block * n);
      char* out = static_cast<char*>(a.out);
      for (int k = 0; k < n; ++k) {  // the own block last
        const int q = (me + 1 + k) % n;
        const char* in = q == me ? static_cast<const char*>(a.in)
                                 : arena.At(shm_detail::ArenaOffset(g, p, q, 0));
        CopyFast(out + q * block, in + me * block, block, stream);
      }
    }
  }
  if (p.variant == 2) return AllToAllDirect(g, a, p, w);
  return shm_detail::FinishRegistered(g, p, w);
}

}  // namespace loom::comm
