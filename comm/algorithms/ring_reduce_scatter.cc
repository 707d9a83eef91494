#include "comm/algorithms/ring_reduce_scatter.h"

#include "comm/reduce.h"
#include "runtime/base/check.h"
#include "runtime/base/status_macros.h"

namespace loom::comm {

using runtime::DType;

absl::Status RingReduceScatterBlocks(const P2PContext& ctx, const void* in,
                                     const BlockLayout& blocks, void* out, DType dtype, ReduceOp op,
                                     int avg_divisor, RingScratch& scratch) {
  PointToPoint& p2p = ctx.p2p;
  const int n = p2p.size(), r = p2p.rank();
  LOOM_CHECK_EQ(static_cast<int>(blocks.length.size()), n) << "RingReduceScatterBlocks";
  const DType acc = AccumDType(dtype, op);
  const char* src = static_cast<const char*>(in);
  auto block_in = [&](int b) { return src + Bytes(dtype, blocks.offset[b]); };
  auto len = [&](int b) { return blocks.length[b]; };
  if (n == 1) {
    const void* only[1] = {block_in(0)};
    if (len(0) > 0) ReduceBuffers(dtype, op, only, 1, out, len(0), avg_divisor);
    return absl::OkStatus();
  }
  const int next = (r + 1) % n, prev = (r + n - 1) % n;
  const int64_t max_len = blocks.MaxLength();
  char* const send_buf = scratch.send.Get(Bytes(acc, max_len));
  char* const recv_buf = scratch.recv.Get(Bytes(acc, max_len));
  // 16-bit sums only: this rank's contribution widened to f32, and the first hop's message.
  char* const widened = acc != dtype ? scratch.widened.Get(Bytes(acc, max_len)) : nullptr;
  char* const narrow = acc != dtype ? scratch.narrow.Get(Bytes(dtype, max_len)) : nullptr;

  // The first hop forwards each rank's own block as it is: 16-bit values are exact, so widening
  // them first would only double the bytes on the wire. Later hops carry f32 partial sums.
  int send_block = (r + n - 1) % n;
  const void* send_ptr = block_in(send_block);
  DType wire = dtype;
  for (int k = 0; k < n - 1; ++k) {
    const int recv_block = (r + 2 * n - k - 2) % n;
    const int64_t m = len(recv_block);
    char* const into = wire != acc ? narrow : recv_buf;
    LOOM_RETURN_IF_ERROR(p2p.SendRecv(send_ptr, Bytes(wire, len(send_block)), next, into,
                                      Bytes(wire, m), prev, ctx.tag, ctx.deadline));
    if (into != recv_buf) ConvertElements(into, dtype, recv_buf, acc, m);
    const void* mine = block_in(recv_block);
    if (acc != dtype) {
      ConvertElements(mine, dtype, widened, acc, m);
      mine = widened;
    }
    // `mine` first: ReduceBuffers lets only inputs[0] alias the output (in-place calls).
    const void* inputs[2] = {mine, recv_buf};
    if (k == n - 2) {
      // recv_block == r: the owner finishes its block once; every rank later receives these bytes.
      if (m == 0) break;
      if (acc == dtype) {
        ReduceBuffers(acc, op, inputs, 2, out, m, avg_divisor);
      } else {
        ReduceBuffers(acc, op, inputs, 2, widened, m, avg_divisor);
        ConvertElements(widened, acc, out, dtype, m);
      }
      break;
    }
    // The send buffer was consumed by the SendRecv above; it receives the next partial.
    if (m > 0) ReduceBuffers(acc, HopOp(op), inputs, 2, send_buf, m, 1);
    send_ptr = send_buf;
    wire = acc;
    send_block = recv_block;
  }
  return absl::OkStatus();
}

absl::Status RingReduceScatter(const P2PContext& ctx, const void* in, void* out, int64_t count,
                               DType dtype, ReduceOp op) {
  const int n = ctx.p2p.size();
  const BlockLayout blocks = BlockLayout::Uniform(count, n);
  const int64_t segment = SegmentElements(ctx.segment_bytes, AccumDType(dtype, op));
  const int64_t segments = NumSegments(count, segment);
  RingScratch scratch;
  for (int64_t j = 0; j < segments; ++j) {
    const int64_t lo = j * segment;
    LOOM_RETURN_IF_ERROR(RingReduceScatterBlocks(ctx, in, blocks.Window(lo, segment),
                                                 static_cast<char*>(out) + Bytes(dtype, lo), dtype,
                                                 op, n, scratch));
  }
  return absl::OkStatus();
}

}  // namespace loom::comm
