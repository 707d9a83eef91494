// The steps the registered algorithms (*_registered.cc, and the one-shot all-reduce's in-place
// reads) share: agreeing that every rank's buffers are in the arena, and the closing step after
// which every rank knows its peers are done with its buffers.
#include <cstring>

#include "absl/strings/str_cat.h"
#include "comm/shm/algorithms.h"
#include "runtime/base/status_macros.h"

namespace loom::comm::shm_detail {

absl::Status SameBytes(const ShmGroup& g, uint64_t step, int index, int64_t bytes) {
  for (int q = 0; q < g.size(); ++q) {
    int64_t theirs;
    std::memcpy(&theirs, g.Inline(q, step) + index * sizeof(int64_t), sizeof(theirs));
    if (theirs != bytes) {
      return absl::FailedPreconditionError(
          absl::StrCat("rank ", q, " passed ", theirs, " bytes where rank ", g.rank(), " passed ",
                       bytes, " (LOOM_DEBUG_COLLECTIVES=1 names every rank's call)"));
    }
  }
  return absl::OkStatus();
}

absl::Status AgreeOnArena(ShmGroup& g, const int64_t* mine, int k, int64_t bytes, ShmProgress& p,
                          ShmWait& w) {
  if (p.phase == 0) {
    p.step = g.NextStep(0);
    std::memcpy(g.Inline(g.rank(), p.step.number), mine, k * sizeof(int64_t));
    std::memcpy(g.Inline(g.rank(), p.step.number) + k * sizeof(int64_t), &bytes, sizeof(bytes));
    g.Publish(ShmGroup::kArrived, p.step.number);
    p.phase = 1;
  }
  absl::Status s = g.WaitAll(ShmGroup::kArrived, p.step.number, w);
  if (!s.ok()) return s;
  p.phase = 0;
  // Every rank sees the same lines: a mismatch fails every rank alike, before anyone reads a
  // peer's buffer past its end.
  LOOM_RETURN_IF_ERROR(SameBytes(g, p.step.number, k, bytes));
  p.decision_step = p.step.number;
  p.variant = 1;
  for (int q = 0; q < g.size(); ++q) {
    for (int i = 0; i < k; ++i) {
      if (ArenaOffset(g, p, q, i) < 0) p.variant = 2;
    }
  }
  return absl::OkStatus();
}

int64_t ArenaOffset(const ShmGroup& g, const ShmProgress& p, int rank, int index) {
  int64_t offset;
  std::memcpy(&offset, g.Inline(rank, p.decision_step) + index * sizeof(int64_t), sizeof(offset));
  return offset;
}

absl::Status FinishRegistered(ShmGroup& g, ShmProgress& p, ShmWait& w) {
  if (p.phase == 0) {
    p.step = g.NextStep(0);
    g.Publish(ShmGroup::kArrived, p.step.number);
    p.phase = 1;
  }
  return g.WaitAll(ShmGroup::kArrived, p.step.number, w);
}

}  // namespace loom::comm::shm_detail
