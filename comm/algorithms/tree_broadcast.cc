#include "comm/algorithms/tree_broadcast.h"

#include <algorithm>
#include <vector>

#include "runtime/base/status_macros.h"

namespace loom::comm {

using runtime::DType;

absl::Status TreeBroadcast(const P2PContext& ctx, void* buffer, int64_t count, DType dtype,
                           int root) {
  PointToPoint& p2p = ctx.p2p;
  const int n = p2p.size(), r = p2p.rank();
  if (n == 1) return absl::OkStatus();
  const int v = (r - root + n) % n;
  auto real = [&](int w) { return (w + root) % n; };
  int parent = PointToPoint::kNoPeer;
  int mask = 1;
  for (; mask < n; mask <<= 1) {
    if (v & mask) {
      parent = real(v - mask);
      break;
    }
  }
  std::vector<int> children;
  for (mask >>= 1; mask > 0; mask >>= 1) {
    if (v + mask < n) children.push_back(real(v + mask));
  }
  char* data = static_cast<char*>(buffer);
  const int64_t segment = SegmentElements(ctx.segment_bytes, dtype);
  const int64_t segments = NumSegments(count, segment);
  for (int64_t j = 0; j < segments; ++j) {
    char* at = data + Bytes(dtype, j * segment);
    const size_t bytes = Bytes(dtype, std::min(segment, count - j * segment));
    if (parent != PointToPoint::kNoPeer) {
      LOOM_RETURN_IF_ERROR(p2p.Recv(at, bytes, parent, ctx.tag, ctx.deadline));
    }
    for (int child : children) {
      LOOM_RETURN_IF_ERROR(p2p.Send(at, bytes, child, ctx.tag, ctx.deadline));
    }
  }
  return absl::OkStatus();
}

}  // namespace loom::comm
