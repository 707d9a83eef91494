// Broadcast from a root buffer in the arena: when the root's buffer lies in the communicator's
// shared arena (ShmArena), the other ranks copy straight out of it — one copy per receiver, as
// with Open MPI's single-copy (CMA) path, where the staged path costs the root a copy into its
// ring and every receiver a read of it. One inline step carries the root's offset (the receivers
// publish 0: their buffers may be anywhere); if the root's buffer is elsewhere, every rank takes
// BroadcastFromRoot. A closing step keeps the root's buffer as it is until every receiver has
// copied it.
#include "comm/shm/algorithms.h"
#include "comm/shm/shm_reduce.h"
#include "runtime/base/status_macros.h"

namespace loom::comm {

absl::Status BroadcastRegistered(ShmGroup& g, const ShmArena& arena, const CollectiveArgs& a,
                                 ShmProgress& p, ShmWait& w) {
  const int me = g.rank(), root = a.fp.root;
  const int64_t bytes = a.fp.count * static_cast<int64_t>(shm_detail::ElementSize(a));
  if (bytes == 0) return absl::OkStatus();
  if (p.variant == 0) {
    const int64_t mine = me == root ? arena.OffsetOf(a.in, bytes) : 0;
    LOOM_RETURN_IF_ERROR(shm_detail::AgreeOnArena(g, &mine, 1, bytes, p, w));
    if (p.variant == 1 && me != root) {
      CopyFast(a.out, arena.At(shm_detail::ArenaOffset(g, p, root, 0)), bytes,
               g.StreamOutput(bytes));
    }
  }
  if (p.variant == 2) return BroadcastFromRoot(g, a, p, w);
  return shm_detail::FinishRegistered(g, p, w);
}

}  // namespace loom::comm
