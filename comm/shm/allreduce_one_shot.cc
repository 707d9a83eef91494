// One-shot all-reduce, for small messages (latency-bound): every rank publishes its whole input
// and, after one wait, reduces all ranks' inputs in rank order itself.
//
// Where a rank's input is published: tiny messages ride in its arrived-flag line; an input in the
// communicator's shared arena (out of place, 512 bytes or more) is read by the peers where it
// lies, and its offset rides in the flag line instead; any other input is copied to the rank's
// ring slot. Reading an input in place saves the copy into the ring (the largest cost of a 4 KiB
// call), but the input must then stay as it is until every peer has read it: when any rank's input
// was read in place, all ranks take a closing step (publish, wait) before returning. Readers do
// not care where a peer's bytes are, so ranks may differ. Non-inline calls also publish their byte
// count, and every rank checks them (shm_detail::SameBytes) before reading a peer's input.
#include <cstring>
#include <vector>

#include "comm/shm/algorithms.h"
#include "comm/shm/shm_reduce.h"
#include "runtime/base/status_macros.h"

namespace loom::comm {
namespace {

// Below this the copy into the ring costs less than the closing step (2 ranks: 64-256 B 0.35-0.39
// µs read in place against 0.27-0.34 µs copied; 512 B 0.35 against 0.43; 2 KiB 0.38 against 0.81).
constexpr int64_t kReadInPlaceMinBytes = 512;

}  // namespace

absl::Status AllReduceOneShot(ShmGroup& g, const ShmArena* arena, const CollectiveArgs& a,
                              ShmProgress& p, ShmWait& w) {
  const int n = g.size(), me = g.rank();
  const int64_t count = a.fp.count;
  const int64_t bytes = count * static_cast<int64_t>(shm_detail::ElementSize(a));
  if (count == 0) return absl::OkStatus();
  const bool inline_data = bytes <= ShmGroup::kInlineBytes;
  if (p.variant == 0) {
    if (p.phase == 0) {
      p.step = g.NextStep(inline_data ? 0 : bytes);  // callers keep one-shot messages small
      p.decision_step = p.step.number;
      if (inline_data) {
        CopyFast(g.Inline(me, p.step.number), a.in, bytes);
      } else {
        const bool in_place = a.in == a.out;
        const bool read_in_place = arena != nullptr && !in_place && bytes >= kReadInPlaceMinBytes;
        const int64_t offset = read_in_place ? arena->OffsetOf(a.in, bytes) : -1;
        const int64_t words[2] = {offset, bytes};
        std::memcpy(g.Inline(me, p.step.number), words, sizeof(words));
        if (offset < 0) CopyFast(g.Slot(me, p.step), a.in, bytes);
      }
      g.Publish(ShmGroup::kArrived, p.step.number);
      p.phase = 1;
    }
    absl::Status s = g.WaitAll(ShmGroup::kArrived, p.step.number, w);
    if (!s.ok()) return s;
    if (!inline_data) LOOM_RETURN_IF_ERROR(shm_detail::SameBytes(g, p.step.number, 1, bytes));
    std::vector<const void*> inputs(static_cast<size_t>(n));
    bool any_in_place = false;
    // This rank's own contribution is read from its input (still in cache); the bytes equal what
    // it published, so every rank reduces identical values in the same order.
    for (int r = 0; r < n; ++r) {
      const int64_t offset = inline_data ? -1 : shm_detail::ArenaOffset(g, p, r, 0);
      any_in_place = any_in_place || offset >= 0;
      inputs[r] = r == me       ? a.in
                  : inline_data ? g.Inline(r, p.step.number)
                  : offset >= 0 ? arena->At(offset)
                                : g.Slot(r, p.step);
    }
    ReduceInto(a.fp.dtype, a.fp.reduce, inputs.data(), n, a.out, nullptr, count, n);
    p.phase = 0;
    if (!any_in_place) return absl::OkStatus();
    p.variant = 1;
  }
  // Somebody's input was read where it lies: it may change only once every rank has read it.
  return shm_detail::FinishRegistered(g, p, w);
}

}  // namespace loom::comm
