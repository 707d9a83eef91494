#include "comm/algorithms/dissemination_barrier.h"

#include "runtime/base/status_macros.h"

namespace loom::comm {

absl::Status DisseminationBarrier(const P2PContext& ctx) {
  PointToPoint& p2p = ctx.p2p;
  const int n = p2p.size(), r = p2p.rank();
  for (int d = 1; d < n; d *= 2) {
    LOOM_RETURN_IF_ERROR(
        p2p.SendRecv(nullptr, 0, (r + d) % n, nullptr, 0, (r + n - d) % n, ctx.tag, ctx.deadline));
  }
  return absl::OkStatus();
}

}  // namespace loom::comm
