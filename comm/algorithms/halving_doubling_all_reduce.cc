#include "comm/algorithms/halving_doubling_all_reduce.h"

#include <algorithm>

#include "comm/reduce.h"
#include "runtime/base/status_macros.h"

namespace loom::comm {

using runtime::DType;

absl::Status HalvingDoublingAllReduce(const P2PContext& ctx, const void* in, void* out,
                                      int64_t count, DType dtype, ReduceOp op) {
  PointToPoint& p2p = ctx.p2p;
  const int n = p2p.size(), r = p2p.rank();
  if (n == 1) {
    ConvertElements(in, dtype, out, dtype, count);
    return absl::OkStatus();
  }
  int p = 1;
  while (p * 2 <= n) p *= 2;
  const int rem = n - p;
  // Virtual rank among the p participants; -1 for the even ranks the fix-up folds into r + 1.
  const int vr = r < 2 * rem ? (r % 2 == 0 ? -1 : r / 2) : r - rem;
  auto real = [rem](int v) { return v < rem ? 2 * v + 1 : v + rem; };

  const DType acc = AccumDType(dtype, op);
  const size_t full = Bytes(dtype, count);
  Scratch acc_store, tmp_store;
  // Partials live in `out` itself unless they are widened to f32.
  char* const work = acc != dtype ? acc_store.Get(Bytes(acc, count)) : static_cast<char*>(out);
  char* const tmp = tmp_store.Get(Bytes(acc, count));

  if (vr < 0) {
    LOOM_RETURN_IF_ERROR(p2p.Send(in, full, r + 1, ctx.tag, ctx.deadline));
  } else {
    ConvertElements(in, dtype, work, acc, count);
    if (r < 2 * rem) {
      // Fold in the input of the even rank below. Received in the dtype (half the bytes of f32).
      Scratch theirs_store;
      char* const theirs = theirs_store.Get(full);
      LOOM_RETURN_IF_ERROR(p2p.Recv(theirs, full, r - 1, ctx.tag, ctx.deadline));
      const void* other = theirs;
      if (acc != dtype) {
        ConvertElements(theirs, dtype, tmp, acc, count);
        other = tmp;
      }
      const void* inputs[2] = {work, other};
      if (count > 0) ReduceBuffers(acc, HopOp(op), inputs, 2, work, count, 1);
    }

    const BlockLayout blocks = BlockLayout::Balanced(count, p);
    auto start = [&](int b) { return b < p ? blocks.offset[b] : count; };
    // Reduce-scatter by recursive halving: afterwards this rank owns block vr, fully reduced.
    int lo = 0, hi = p;
    for (int d = p / 2; d >= 1; d /= 2) {
      const int partner = real(vr ^ d), mid = lo + d;
      const bool upper = (vr & d) != 0;
      const int keep_lo = upper ? mid : lo, keep_hi = upper ? hi : mid;
      const int send_lo = upper ? lo : mid, send_hi = upper ? mid : hi;
      const int64_t keep = start(keep_hi) - start(keep_lo);
      LOOM_RETURN_IF_ERROR(p2p.SendRecv(work + Bytes(acc, start(send_lo)),
                                        Bytes(acc, start(send_hi) - start(send_lo)), partner, tmp,
                                        Bytes(acc, keep), partner, ctx.tag, ctx.deadline));
      char* mine = work + Bytes(acc, start(keep_lo));
      const void* inputs[2] = {mine, tmp};
      // The last combination (d == 1) finishes the block: avg divides here, once.
      if (keep > 0) ReduceBuffers(acc, d == 1 ? op : HopOp(op), inputs, 2, mine, keep, n);
      lo = keep_lo;
      hi = keep_hi;
    }
    char* dst = static_cast<char*>(out);
    ConvertElements(work + Bytes(acc, start(vr)), acc, dst + Bytes(dtype, start(vr)), dtype,
                    start(vr + 1) - start(vr));
    // All-gather by recursive doubling, in the dtype, straight into `out`.
    lo = vr;
    for (int d = 1; d < p; d *= 2) {
      const int partner = real(vr ^ d), other = lo ^ d;
      LOOM_RETURN_IF_ERROR(p2p.SendRecv(
          dst + Bytes(dtype, start(lo)), Bytes(dtype, start(lo + d) - start(lo)), partner,
          dst + Bytes(dtype, start(other)), Bytes(dtype, start(other + d) - start(other)), partner,
          ctx.tag, ctx.deadline));
      lo = std::min(lo, other);
    }
  }
  if (r < 2 * rem) {
    if (vr < 0) return p2p.Recv(out, full, r + 1, ctx.tag, ctx.deadline);
    return p2p.Send(out, full, r - 1, ctx.tag, ctx.deadline);
  }
  return absl::OkStatus();
}

}  // namespace loom::comm
