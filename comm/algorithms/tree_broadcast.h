// Binomial-tree broadcast, segmented: with ranks renumbered so the root is 0, rank v receives from
// v minus its lowest set bit and forwards to v + 2^j for each 2^j below that bit (largest subtree
// first). ceil(log2 n) rounds; the buffer moves in segments of at most ctx.segment_bytes, each
// forwarded as soon as it arrives, so deep trees pipeline large buffers.
//
//   P2PContext ctx{p2p, deadline};
//   LOOM_RETURN_IF_ERROR(TreeBroadcast(ctx, weights, count, DType::kF32, /*root=*/0));
#pragma once

#include <cstdint>

#include "absl/status/status.h"
#include "comm/algorithms/common.h"

namespace loom::comm {

// `buffer`: count elements of host memory, read on `root`, overwritten on every other rank. Every
// rank calls it with the same count, dtype and root. Blocking.
absl::Status TreeBroadcast(const P2PContext& ctx, void* buffer, int64_t count, runtime::DType dtype,
                           int root);

}  // namespace loom::comm
