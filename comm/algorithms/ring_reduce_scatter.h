// Ring reduce-scatter over point-to-point messages (the bandwidth-optimal algorithm that spans
// hosts). In n-1 steps, rank r sends its running partial of block (r-k-1) mod n to rank r+1 and
// receives the partial of block (r-k-2) mod n from rank r-1, adding its own contribution; after the
// last step it holds block r reduced over every rank. Each rank sends (n-1)/n of the buffer.
// Partials of bf16/f16 sums travel as f32 and are rounded once by the block's owner; avg sums and
// divides once at the end. Block q is accumulated in ring order q+1, q+2, ..., q (mod n).
//
//   P2PContext ctx{p2p, deadline};
//   // in: p2p.size()·count elements, block q destined for rank q; out: count elements
//   LOOM_RETURN_IF_ERROR(RingReduceScatter(ctx, in, out, count, DType::kBF16, ReduceOp::kSum));
#pragma once

#include <cstdint>

#include "absl/status/status.h"
#include "comm/algorithms/common.h"

namespace loom::comm {

// Every rank of ctx.p2p calls it with the same count, dtype and op. Host memory, blocking until
// this rank's block is complete. `out` may be block rank() of `in` (in place) but must not
// otherwise overlap it. The buffer is moved in segments of at most ctx.segment_bytes per message.
absl::Status RingReduceScatter(const P2PContext& ctx, const void* in, void* out, int64_t count,
                               runtime::DType dtype, ReduceOp op);

// The buffers of RingReduceScatterBlocks, kept across the segments of one call.
struct RingScratch {
  Scratch send, recv, widened, narrow;
};

// One unsegmented ring pass over arbitrary blocks (one per rank, offsets in elements of `in`):
// writes block rank() reduced over every rank to `out` (blocks.length[rank()] elements); kAvg
// divides by `avg_divisor`. `out` may equal the block's own place in `in`. Messages are whole
// blocks: the first hop's in `dtype` (each rank's own values), later hops' in AccumDType (f32
// partial sums of 16-bit values). RingAllReduce runs it once per segment.
absl::Status RingReduceScatterBlocks(const P2PContext& ctx, const void* in,
                                     const BlockLayout& blocks, void* out, runtime::DType dtype,
                                     ReduceOp op, int avg_divisor, RingScratch& scratch);

}  // namespace loom::comm
