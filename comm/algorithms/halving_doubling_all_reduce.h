// Recursive halving-doubling all-reduce (Rabenseifner): a reduce-scatter by recursive halving
// (log2 p steps; at distance d = p/2, ..., 1 a rank swaps half of its current range with rank ^ d
// and reduces the half it keeps) followed by an all-gather by recursive doubling (d = 1, ..., p/2).
// Same 2(p-1)/p bandwidth term as the ring but 2·log2(p) latencies instead of 2(n-1): the choice
// for small and medium messages. Non-power-of-two worlds use the standard fix-up: with
// p = 2^floor(log2 n) and rem = n - p, each even rank below 2·rem first hands its whole input to
// the next rank and sits out, then receives the result (two extra steps and two full-buffer
// transfers; so for n = 3 the ring is never slower). Each block is finished once, by its owner, so
// every rank gets identical bytes; bf16/f16 sums travel and accumulate in f32, rounded once; avg
// divides once.
//
//   P2PContext ctx{p2p, deadline};
//   LOOM_RETURN_IF_ERROR(HalvingDoublingAllReduce(ctx, in, out, n, DType::kF32, ReduceOp::kSum));
#pragma once

#include <cstdint>

#include "absl/status/status.h"
#include "comm/algorithms/common.h"

namespace loom::comm {

// Every rank of ctx.p2p calls it with the same count, dtype and op. `in` and `out` hold `count`
// elements of host memory; `out` may equal `in`. Blocking. Not segmented: scratch and messages
// scale with count (up to a full buffer in the fix-up), which is why the ring takes large buffers.
absl::Status HalvingDoublingAllReduce(const P2PContext& ctx, const void* in, void* out,
                                      int64_t count, runtime::DType dtype, ReduceOp op);

}  // namespace loom::comm
