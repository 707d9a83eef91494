#include "comm/algorithms/ring_all_reduce.h"

#include "comm/algorithms/ring_all_gather.h"
#include "comm/algorithms/ring_reduce_scatter.h"
#include "runtime/base/status_macros.h"

namespace loom::comm {

using runtime::DType;

absl::Status RingAllReduce(const P2PContext& ctx, const void* in, void* out, int64_t count,
                           DType dtype, ReduceOp op) {
  const int n = ctx.p2p.size(), r = ctx.p2p.rank();
  const BlockLayout blocks = BlockLayout::Balanced(count, n);
  // Segments are sized by the reduce-scatter's wire dtype (f32 for 16-bit sums).
  const int64_t segment = SegmentElements(ctx.segment_bytes, AccumDType(dtype, op));
  const int64_t segments = NumSegments(blocks.MaxLength(), segment);
  char* dst = static_cast<char*>(out);
  RingScratch scratch;
  for (int64_t j = 0; j < segments; ++j) {
    // Reads only this window of `in` and writes only this window of `out`, so in == out is safe.
    const BlockLayout window = blocks.Window(j * segment, segment);
    LOOM_RETURN_IF_ERROR(RingReduceScatterBlocks(
        ctx, in, window, dst + Bytes(dtype, window.offset[r]), dtype, op, n, scratch));
    if (n > 1) LOOM_RETURN_IF_ERROR(RingAllGatherBlocks(ctx, out, window, dtype));
  }
  return absl::OkStatus();
}

}  // namespace loom::comm
