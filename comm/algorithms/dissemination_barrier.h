// Dissemination barrier (Hensgen, Finkel and Manber): in round k = 0, 1, ..., ceil(log2 n)-1 rank r
// sends an empty message to rank r + 2^k and receives one from rank r - 2^k. After the last round
// every rank has transitively heard from every other, so no rank leaves before all have arrived.
// Works for any n; ceil(log2 n) latencies, no root.
//
//   P2PContext ctx{p2p, deadline};
//   LOOM_RETURN_IF_ERROR(DisseminationBarrier(ctx));
#pragma once

#include "absl/status/status.h"
#include "comm/algorithms/common.h"

namespace loom::comm {

// Every rank of ctx.p2p calls it. Blocking; on timeout names the peer of the round that stalled.
absl::Status DisseminationBarrier(const P2PContext& ctx);

}  // namespace loom::comm
