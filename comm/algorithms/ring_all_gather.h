// Ring all-gather over point-to-point messages: in n-1 steps rank r forwards block (r-k) mod n to
// rank r+1 and receives block (r-k-1) mod n from rank r-1, straight into the output (no scratch).
// Every rank sends (n-1)/n of the gathered buffer: bandwidth-optimal, n-1 latencies.
//
//   P2PContext ctx{p2p, deadline};
//   // in: count elements; out: p2p.size()·count elements, rank q's block at q·count
//   LOOM_RETURN_IF_ERROR(RingAllGather(ctx, in, out, count, DType::kF32));
#pragma once

#include <cstdint>

#include "absl/status/status.h"
#include "comm/algorithms/common.h"

namespace loom::comm {

// Every rank of ctx.p2p calls it with the same count and dtype. Host memory, blocking. `in` may be
// this rank's block of `out` (in place) but must not otherwise overlap it. Messages are at most
// ctx.segment_bytes.
absl::Status RingAllGather(const P2PContext& ctx, const void* in, void* out, int64_t count,
                           runtime::DType dtype);

// One unsegmented ring pass over arbitrary blocks of `buffer` (one per rank, offsets in elements):
// block rank() must already be in place; afterwards every block is. RingAllReduce runs it once per
// segment, on the blocks RingReduceScatterBlocks produced.
absl::Status RingAllGatherBlocks(const P2PContext& ctx, void* buffer, const BlockLayout& blocks,
                                 runtime::DType dtype);

}  // namespace loom::comm
