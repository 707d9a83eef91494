// Ring all-reduce = ring reduce-scatter + ring all-gather, one segment at a time. The buffer is cut
// into one balanced block per rank; each segment (a window of at most ctx.segment_bytes of every
// block) is reduce-scattered, then all-gathered, so scratch stays bounded and each received
// segment is reduced while it is still in cache. Every rank sends 2(n-1)/n of the buffer (the
// bandwidth bound) in 2(n-1) steps per segment; prefer HalvingDoublingAllReduce when latency
// dominates. Results are bitwise identical on every rank: each block is finished once, by its
// owner, and the all-gather copies those bytes. bf16/f16 sums accumulate in f32 across hops and are
// rounded once; avg divides once.
//
//   P2PContext ctx{p2p, deadline};
//   LOOM_RETURN_IF_ERROR(RingAllReduce(ctx, grads, grads, n, DType::kBF16, ReduceOp::kAvg));
#pragma once

#include <cstdint>

#include "absl/status/status.h"
#include "comm/algorithms/common.h"

namespace loom::comm {

// Every rank of ctx.p2p calls it with the same count, dtype and op. `in` and `out` hold `count`
// elements of host memory; `out` may equal `in`. Blocking.
absl::Status RingAllReduce(const P2PContext& ctx, const void* in, void* out, int64_t count,
                           runtime::DType dtype, ReduceOp op);

}  // namespace loom::comm
