// All-reduce on registered buffers: when every rank's input and output lie in the communicator's
// shared arena (ShmArena), rank r reduces segment r straight from every rank's input into every
// rank's output: per rank one read of S and n writes of S/n — about 2·S of memory traffic against
// (5 - 2/n)·S for the staged two-phase algorithm. Each segment is reduced once, in rank order, so
// all ranks hold bitwise identical results (the same as the staged paths'). One inline step first
// carries each rank's two offsets; if any buffer is elsewhere, every rank takes AllReduceTwoPhase.
// In place is fine: segment r of any buffer is read and written only by rank r, element by
// element.
#include <vector>

#include "comm/shm/algorithms.h"
#include "comm/shm/shm_reduce.h"
#include "runtime/base/status_macros.h"

namespace loom::comm {

using shm_detail::PartBegin;

absl::Status AllReduceRegistered(ShmGroup& g, const ShmArena& arena, const CollectiveArgs& a,
                                 ShmProgress& p, ShmWait& w) {
  const int n = g.size(), me = g.rank();
  const size_t es = shm_detail::ElementSize(a);
  const int64_t count = a.fp.count, bytes = count * static_cast<int64_t>(es);
  if (count == 0) return absl::OkStatus();
  if (p.variant == 0) {
    const int64_t mine[2] = {arena.OffsetOf(a.in, bytes), arena.OffsetOf(a.out, bytes)};
    LOOM_RETURN_IF_ERROR(shm_detail::AgreeOnArena(g, mine, 2, bytes, p, w));
    if (p.variant == 1) {
      const int64_t b = PartBegin(count, n, me), len = PartBegin(count, n, me + 1) - b;
      std::vector<const void*> inputs(static_cast<size_t>(n));
      std::vector<char*> outputs(static_cast<size_t>(n));
      for (int q = 0; q < n; ++q) {
        inputs[q] = (q == me ? static_cast<const char*>(a.in)
                             : arena.At(shm_detail::ArenaOffset(g, p, q, 0))) +
                    b * es;
        outputs[q] =
            (q == me ? static_cast<char*>(a.out) : arena.At(shm_detail::ArenaOffset(g, p, q, 1))) +
            b * es;
      }
      // Outputs of the usual streaming size (8 MiB) and more: at 8 MiB, 2 ranks, non-temporal
      // stores gave a steady 2.7-3.0x MPI's time against 2.1-3.3x with plain stores.
      const bool stream = g.StreamOutput(bytes);
      // Two outputs per pass (the own and the next rank's), then copies to the rest.
      const int next = (me + 1) % n;
      ReduceInto(a.fp.dtype, a.fp.reduce, inputs.data(), n, outputs[me],
                 n > 1 ? outputs[next] : nullptr, len, n, stream, stream);
      for (int k = 2; k < n; ++k) {
        const int q = (me + k) % n;
        CopyFast(outputs[q], outputs[me], len * es, stream);
      }
    }
  }
  if (p.variant == 2) return AllReduceTwoPhase(g, a, p, w);
  return shm_detail::FinishRegistered(g, p, w);
}

}  // namespace loom::comm
