// All-to-all with per-peer counts from inputs in the arena: rank r copies what each peer sends it
// straight out of that peer's input into its own output, one copy per element (the generic
// ExchangeStaged copies every rank's whole input to every rank). The peers need each sender's
// displacements, so each rank puts its table of send displacements in the arena too and one
// inline step carries both offsets (an empty input is represented by the table's offset, never
// read); if any rank's input lies elsewhere, every rank takes ExchangeStaged. A closing step keeps
// the inputs as they are until every rank has copied its part out. Resumable while waiting for
// the peers to arrive (the table stays in ShmProgress::kept); from there on it runs to the end.
#include <cstring>
#include <vector>

#include "comm/shm/algorithms.h"
#include "comm/shm/shm_reduce.h"
#include "runtime/base/status_macros.h"
#include "runtime/tensor.h"

namespace loom::comm {

absl::Status AllToAllVRegistered(ShmGroup& g, ShmArena& arena, const CollectiveArgs& a,
                                 ShmProgress& p, ShmWait& w) {
  const int n = g.size(), me = g.rank();
  const int64_t es = static_cast<int64_t>(shm_detail::ElementSize(a));
  if (p.variant == 0) {
    if (p.phase == 0) {  // a resumed call's peers may already have read where its table is
      p.kept =
          runtime::Tensor::Empty({n + 1}, runtime::DType::kI64, runtime::MemoryTag::kComm, &arena);
      int64_t* displ = p.kept.data<int64_t>();
      displ[0] = 0;
      for (int j = 0; j < n; ++j) displ[j + 1] = displ[j] + a.send_counts[j];
    }
    const int64_t* displ = p.kept.data<int64_t>();
    const int64_t sent = displ[n];
    const int64_t table_offset = arena.OffsetOf(displ, n * static_cast<int64_t>(sizeof(int64_t)));
    // In place, a rank's output would overwrite the input its peers are reading.
    const int64_t in_offset = a.in == a.out ? -1
                              : sent == 0   ? table_offset
                                            : arena.OffsetOf(a.in, sent * es);
    const int64_t mine[2] = {in_offset, table_offset};
    LOOM_RETURN_IF_ERROR(shm_detail::AgreeOnArena(g, mine, 2, es, p, w));
    // Every rank is in the call: what is left waits only for the peers' copies, so it runs to the
    // end here rather than giving up (nothing after this point could resume).
    w.give_up_at.reset();
    if (p.variant == 2) return ExchangeStaged(g, a, w);
    int64_t total = 0;
    for (int q = 0; q < n; ++q) total += a.recv_counts[q];
    const bool stream = g.StreamOutput(total * es);
    std::vector<int64_t> recv_displ(n, 0);
    for (int q = 1; q < n; ++q) recv_displ[q] = recv_displ[q - 1] + a.recv_counts[q - 1];
    char* out = static_cast<char*>(a.out);
    for (int k = 0; k < n; ++k) {  // the own part last
      const int q = (me + 1 + k) % n;
      const int64_t bytes = a.recv_counts[q] * es;
      if (bytes == 0) continue;
      const char* src;
      if (q == me) {
        src = static_cast<const char*>(a.in) + displ[me] * es;
      } else {
        int64_t from;  // q's displacement for me, from q's table
        std::memcpy(&from, arena.At(shm_detail::ArenaOffset(g, p, q, 1)) + me * sizeof(int64_t),
                    sizeof(from));
        src = arena.At(shm_detail::ArenaOffset(g, p, q, 0)) + from * es;
      }
      CopyFast(out + recv_displ[q] * es, src, bytes, stream);
    }
  }
  return shm_detail::FinishRegistered(g, p, w);
}

}  // namespace loom::comm
