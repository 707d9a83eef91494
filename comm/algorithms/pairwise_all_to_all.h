// Pairwise-exchange all-to-all(v): in step k = 1, ..., n-1 rank r sends its block for rank r+k and
// receives the block from rank r-k in one SendRecv, straight between the caller's buffers. n-1
// latencies, each byte sent once; every rank talks to one peer per step, so links are not
// oversubscribed. AllToAll is AllToAllV with equal counts.
//
//   P2PContext ctx{p2p, deadline};
//   // send_counts[j] elements of `in` go to rank j; recv_counts[j] elements of `out` come from j
//   LOOM_RETURN_IF_ERROR(PairwiseAllToAllV(ctx, in, send_counts, out, recv_counts, DType::kI32));
#pragma once

#include <cstdint>

#include "absl/status/status.h"
#include "absl/types/span.h"
#include "comm/algorithms/common.h"

namespace loom::comm {

// in: size()·count elements, block j for rank j; out: size()·count, block j from rank j. Every rank
// calls it with the same count and dtype. Host memory, blocking; in == out is allowed (the input is
// then staged in a copy first).
absl::Status PairwiseAllToAll(const P2PContext& ctx, const void* in, void* out, int64_t count,
                              runtime::DType dtype);

// Blocks in rank order in both buffers; send_counts and recv_counts have one entry per rank, and
// rank j's send_counts[r] must equal rank r's recv_counts[j] (InvalidArgument naming both ranks
// otherwise, from the receiving side). Overlapping in and out are allowed (staged as above).
absl::Status PairwiseAllToAllV(const P2PContext& ctx, const void* in,
                               absl::Span<const int64_t> send_counts, void* out,
                               absl::Span<const int64_t> recv_counts, runtime::DType dtype);

}  // namespace loom::comm
