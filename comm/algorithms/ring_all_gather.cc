#include "comm/algorithms/ring_all_gather.h"

#include "runtime/base/check.h"
#include "runtime/base/status_macros.h"

namespace loom::comm {

using runtime::DType;

absl::Status RingAllGatherBlocks(const P2PContext& ctx, void* buffer, const BlockLayout& blocks,
                                 DType dtype) {
  PointToPoint& p2p = ctx.p2p;
  const int n = p2p.size(), r = p2p.rank();
  LOOM_CHECK_EQ(static_cast<int>(blocks.length.size()), n) << "RingAllGatherBlocks";
  char* base = static_cast<char*>(buffer);
  auto at = [&](int b) { return base + Bytes(dtype, blocks.offset[b]); };
  auto bytes = [&](int b) { return Bytes(dtype, blocks.length[b]); };
  const int next = (r + 1) % n, prev = (r + n - 1) % n;
  for (int k = 0; k < n - 1; ++k) {
    const int send_block = (r + n - k) % n, recv_block = (r + 2 * n - k - 1) % n;
    LOOM_RETURN_IF_ERROR(p2p.SendRecv(at(send_block), bytes(send_block), next, at(recv_block),
                                      bytes(recv_block), prev, ctx.tag, ctx.deadline));
  }
  return absl::OkStatus();
}

absl::Status RingAllGather(const P2PContext& ctx, const void* in, void* out, int64_t count,
                           DType dtype) {
  const int n = ctx.p2p.size(), r = ctx.p2p.rank();
  ConvertElements(in, dtype, static_cast<char*>(out) + Bytes(dtype, r * count), dtype, count);
  const BlockLayout blocks = BlockLayout::Uniform(count, n);
  const int64_t segment = SegmentElements(ctx.segment_bytes, dtype);
  const int64_t segments = NumSegments(count, segment);
  for (int64_t j = 0; j < segments && n > 1; ++j) {
    LOOM_RETURN_IF_ERROR(RingAllGatherBlocks(ctx, out, blocks.Window(j * segment, segment), dtype));
  }
  return absl::OkStatus();
}

}  // namespace loom::comm
