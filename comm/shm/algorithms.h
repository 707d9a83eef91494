// The `shm` backend's collective algorithms, one per file, all over a ShmGroup:
//   allreduce_one_shot.cc   every rank publishes its input (slot or arena); each reduces all
//   allreduce_two_phase.cc  reduce-scatter into the shared result region, then all-gather it
//   reduce_scatter.cc       each rank reduces its own block from everyone's slots
//   all_gather.cc           each rank copies its block to its slot; all copy all slots out
//   all_gather_registered.cc  outputs in the communicator's arena: blocks written straight into
//                           every rank's output
//   all_to_all.cc           block j of rank i travels through i's slot to rank j
//   broadcast.cc            the root's chunks travel through its slot
//   allreduce_registered.cc, all_to_all_registered.cc, broadcast_registered.cc
//                           buffers in the arena: read or written where they lie (registered.cc
//                           holds their shared first and last steps)
//   barrier.cc              one step with no data
//   exchange_staged.cc      generic: every rank's StageInput bytes to every rank, then
//                           ComputeOutput (AllToAllV and anything without a direct algorithm)
// Messages larger than ShmGroup::MaxStepBytes() run in chunks, one step each. A call can be
// suspended at a wait (caller-thread fast path) and resumed later from its ShmProgress.
//
//   ShmProgress progress{args.seq};
//   ShmWait wait{deadline, std::nullopt};
//   LOOM_RETURN_IF_ERROR(AllReduceTwoPhase(group, args, progress, wait));
#pragma once

#include <algorithm>
#include <cstdint>
#include <cstring>

#include "absl/status/status.h"
#include "comm/backend.h"
#include "comm/shm/shm_arena.h"
#include "comm/shm/shm_group.h"
#include "runtime/tensor.h"

namespace loom::comm {

// Where a call stands, so a suspended call resumes exactly where it stopped.
struct ShmProgress {
  uint64_t seq = 0;            // the communicator's sequence number of the call
  int64_t chunk = 0;           // the chunk being worked on
  int phase = 0;               // within the chunk: 0 = not yet published
  ShmStep step;                // the chunk's step, once phase > 0
  int variant = 0;             // algorithms that first agree on a variant: 0 = not yet decided
  uint64_t decision_step = 0;  // the step whose inline data carried the ranks' choices
  runtime::Tensor kept;        // what peers read until the call ends (AllToAllV's displacements)
};

// Algorithms. Buffers and semantics as in CollectiveArgs (comm/backend.h).
// `arena` may be nullptr: inputs in it (out of place) are read by the peers where they lie.
absl::Status AllReduceOneShot(ShmGroup& g, const ShmArena* arena, const CollectiveArgs& a,
                              ShmProgress& p, ShmWait& w);
absl::Status AllReduceTwoPhase(ShmGroup& g, const CollectiveArgs& a, ShmProgress& p, ShmWait& w);
absl::Status ReduceScatterDirect(ShmGroup& g, const CollectiveArgs& a, ShmProgress& p, ShmWait& w);
absl::Status AllGatherDirect(ShmGroup& g, const CollectiveArgs& a, ShmProgress& p, ShmWait& w);
// Every rank writes its block straight into every rank's output when all outputs lie in `arena`
// (agreed in one inline step); otherwise AllGatherDirect.
absl::Status AllGatherRegistered(ShmGroup& g, const ShmArena& arena, const CollectiveArgs& a,
                                 ShmProgress& p, ShmWait& w);
// Rank r reduces segment r straight from every rank's input into every rank's output when all
// inputs and outputs lie in `arena`; otherwise AllReduceTwoPhase.
absl::Status AllReduceRegistered(ShmGroup& g, const ShmArena& arena, const CollectiveArgs& a,
                                 ShmProgress& p, ShmWait& w);
absl::Status AllToAllDirect(ShmGroup& g, const CollectiveArgs& a, ShmProgress& p, ShmWait& w);
// Rank r copies block r straight out of every peer's input when all inputs lie in `arena` (out
// of place; agreed in one inline step); otherwise AllToAllDirect.
absl::Status AllToAllRegistered(ShmGroup& g, const ShmArena& arena, const CollectiveArgs& a,
                                ShmProgress& p, ShmWait& w);
absl::Status BroadcastFromRoot(ShmGroup& g, const CollectiveArgs& a, ShmProgress& p, ShmWait& w);
// The receivers copy straight out of the root's buffer when it lies in `arena` (agreed in one
// inline step); otherwise BroadcastFromRoot.
absl::Status BroadcastRegistered(ShmGroup& g, const ShmArena& arena, const CollectiveArgs& a,
                                 ShmProgress& p, ShmWait& w);
absl::Status BarrierFlags(ShmGroup& g, ShmProgress& p, ShmWait& w);
// Not resumable (runs with a deadline only).
absl::Status ExchangeStaged(ShmGroup& g, const CollectiveArgs& a, ShmWait& w);
// AllToAllV reading each peer's part straight from its input when every input lies in `arena`
// (agreed in one inline step; the displacement tables peers read are allocated there too);
// otherwise ExchangeStaged. Resumable until every rank has arrived (a caller-thread attempt gives
// up only then); after that it runs to the end.
absl::Status AllToAllVRegistered(ShmGroup& g, ShmArena& arena, const CollectiveArgs& a,
                                 ShmProgress& p, ShmWait& w);

// Helpers shared by the algorithm files.
namespace shm_detail {

inline size_t ElementSize(const CollectiveArgs& a) { return runtime::DTypeSize(a.fp.dtype); }
// `count` elements cut into chunks of `per_chunk` (>= 1; one step each): how many, and chunk c's
// first element and length.
struct Chunks {
  int64_t count;
  int64_t per_chunk;
  int64_t num() const { return (count + per_chunk - 1) / per_chunk; }
  int64_t lo(int64_t c) const { return c * per_chunk; }
  int64_t len(int64_t c) const { return std::min(per_chunk, count - c * per_chunk); }
};
// The chunks of one block of `count` elements for the block-wise algorithms (all-to-all,
// reduce-scatter), whose step stages a chunk of every rank's block at once.
inline Chunks BlockChunks(const ShmGroup& g, int64_t count, size_t es) {
  return {count, std::max<int64_t>(1, g.MaxStepBytes() / static_cast<int64_t>(es * g.size()))};
}
// [begin, end) of part `i` of `n` near-equal parts of `len` elements.
inline int64_t PartBegin(int64_t len, int n, int i) { return len * i / n; }
// A copy that tolerates identical source and destination (in-place calls).
inline void CopyBytes(void* dst, const void* src, size_t bytes) {
  if (dst != src && bytes > 0) std::memmove(dst, src, bytes);  // rare: own block, in place
}

// The publishing phase of a block-wise chunk (all-to-all, reduce-scatter): takes the chunk's step,
// copies elements [lo, lo + len) of every peer's block of `in` (blocks of `count` elements) into
// this rank's slot (peer q's at q·len), publishes kArrived and moves `p` to phase 1.
void StagePeerBlocks(ShmGroup& g, ShmProgress& p, const char* in, int64_t count, int64_t lo,
                     int64_t len, size_t es);

// The registered algorithms' first step: every rank publishes, inline, the arena offsets of its
// `k` buffers (k <= 6; -1: not in the arena) and the call's `bytes`. Afterwards p.variant is 1
// when every offset of every rank is >= 0 (all ranks read the same lines, so they agree), else 2;
// p.decision_step is that step, whose lines ArenaOffset reads back. FailedPrecondition on every
// rank when the ranks' bytes differ (reading a peer's smaller buffer would overrun it).
// Resumable; p.phase is 0 again when it returns.
absl::Status AgreeOnArena(ShmGroup& g, const int64_t* mine, int k, int64_t bytes, ShmProgress& p,
                          ShmWait& w);
// FailedPrecondition unless every rank published `bytes` as inline word `index` of `step`.
absl::Status SameBytes(const ShmGroup& g, uint64_t step, int index, int64_t bytes);
int64_t ArenaOffset(const ShmGroup& g, const ShmProgress& p, int rank, int index);
// The registered algorithms' last step: publishes that this rank is done with its peers' buffers
// (has written into them or read from them) and waits until they all are. Resumable (phase 0 -> 1).
absl::Status FinishRegistered(ShmGroup& g, ShmProgress& p, ShmWait& w);

}  // namespace shm_detail
}  // namespace loom::comm
