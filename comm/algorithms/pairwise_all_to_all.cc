#include "comm/algorithms/pairwise_all_to_all.h"

#include <cstring>
#include <functional>
#include <vector>

#include "absl/strings/str_cat.h"

namespace loom::comm {

using runtime::DType;

namespace {

std::vector<int64_t> Offsets(absl::Span<const int64_t> counts) {
  std::vector<int64_t> offsets(counts.size() + 1, 0);
  for (size_t j = 0; j < counts.size(); ++j) offsets[j + 1] = offsets[j] + counts[j];
  return offsets;
}

bool Overlap(const void* a, size_t a_bytes, const void* b, size_t b_bytes) {
  if (a_bytes == 0 || b_bytes == 0) return false;
  std::less<const char*> lt;
  const char* pa = static_cast<const char*>(a);
  const char* pb = static_cast<const char*>(b);
  return lt(pa, pb + b_bytes) && lt(pb, pa + a_bytes);
}

}  // namespace

absl::Status PairwiseAllToAllV(const P2PContext& ctx, const void* in,
                               absl::Span<const int64_t> send_counts, void* out,
                               absl::Span<const int64_t> recv_counts, DType dtype) {
  PointToPoint& p2p = ctx.p2p;
  const int n = p2p.size(), r = p2p.rank();
  if (static_cast<int>(send_counts.size()) != n || static_cast<int>(recv_counts.size()) != n) {
    return absl::InvalidArgumentError(absl::StrCat("AllToAllV needs one count per rank (", n,
                                                   "), got ", send_counts.size(), " and ",
                                                   recv_counts.size()));
  }
  if (send_counts[r] != recv_counts[r]) {
    return absl::InvalidArgumentError(absl::StrCat("rank ", r, " sends itself ", send_counts[r],
                                                   " elements but expects ", recv_counts[r]));
  }
  const std::vector<int64_t> send_at = Offsets(send_counts), recv_at = Offsets(recv_counts);
  const char* src = static_cast<const char*>(in);
  char* dst = static_cast<char*>(out);
  std::vector<char> staged;
  if (Overlap(in, Bytes(dtype, send_at[n]), out, Bytes(dtype, recv_at[n]))) {
    staged.assign(src, src + Bytes(dtype, send_at[n]));
    src = staged.data();
  }
  ConvertElements(src + Bytes(dtype, send_at[r]), dtype, dst + Bytes(dtype, recv_at[r]), dtype,
                  recv_counts[r]);
  for (int k = 1; k < n; ++k) {
    const int to = (r + k) % n, from = (r + n - k) % n;
    const absl::Status s =
        p2p.SendRecv(src + Bytes(dtype, send_at[to]), Bytes(dtype, send_counts[to]), to,
                     dst + Bytes(dtype, recv_at[from]), Bytes(dtype, recv_counts[from]), from,
                     ctx.tag, ctx.deadline);
    if (s.code() == absl::StatusCode::kInvalidArgument) {
      return absl::InvalidArgumentError(
          absl::StrCat("rank ", r, " expects ", recv_counts[from], " ", runtime::DTypeName(dtype),
                       " elements from rank ", from, " (recv_counts[", from,
                       "]) but the message differs: ", s.message()));
    }
    if (!s.ok()) return s;
  }
  return absl::OkStatus();
}

absl::Status PairwiseAllToAll(const P2PContext& ctx, const void* in, void* out, int64_t count,
                              DType dtype) {
  const std::vector<int64_t> counts(static_cast<size_t>(ctx.p2p.size()), count);
  return PairwiseAllToAllV(ctx, in, counts, out, counts, dtype);
}

}  // namespace loom::comm
