// The `ring` backend: every collective of CollectiveArgs built from point-to-point messages with
// loom's own algorithms (comm/algorithms/), over any PointToPoint transport: MPI across hosts, or
// thread-ranks in tests. It is the portable path that spans hosts, and the inter-host half of the
// hierarchical communicator (comm/hierarchical.h).
//
//   std::unique_ptr<PointToPoint> p2p = ...;   // MakeMpiPointToPoint() or a thread-rank's
//   Communicator world(MakeP2PBackend(std::move(p2p)), CommOptions::FromEnv());
//   world.AllReduce(grads, grads, ReduceOp::kAvg)->Wait();
//
// Algorithms: AllReduce by recursive halving-doubling up to `halving_doubling_max_bytes` on a
// power-of-two world (non-power-of-two worlds of 5+ ranks up to the smaller
// `halving_doubling_max_bytes_non_pow2`, paying the fix-up), the segmented ring (reduce-scatter +
// all-gather) otherwise; ReduceScatter and AllGather by ring; AllToAll(V) by pairwise exchange;
// Broadcast by a segmented binomial tree; Barrier by dissemination; Send/Recv straight on the
// transport, Send buffered (user tag t travels as t + 1; collectives use tag 0). Split all-gathers
// (color, key), plans the groups (PlanSplit) and splits the transport. Reductions give bitwise
// identical results on every rank; bf16/f16 sums accumulate in f32 across hops and are rounded
// once.
#pragma once

#include <cstdint>
#include <memory>

#include "comm/backend.h"
#include "comm/p2p.h"

namespace loom::comm {

struct P2POptions {
  enum class AllReduceAlgorithm { kAuto, kRing, kHalvingDoubling };
  // kAuto chooses by size and world (ChooseAllReduce); the others force one (tests, benchmarks).
  AllReduceAlgorithm all_reduce = AllReduceAlgorithm::kAuto;
  // Recursive halving-doubling takes AllReduce buffers up to this many bytes on power-of-two
  // worlds (oneCCL's split between Rabenseifner and ring; the same bandwidth term as the ring with
  // log2 n instead of n-1 latencies)...
  int64_t halving_doubling_max_bytes = int64_t{1} << 20;
  // ...and up to this many on non-power-of-two worlds of at least 5 ranks, where its fix-up moves
  // two extra full buffers (with 3 ranks the ring takes as many steps and always less traffic).
  int64_t halving_doubling_max_bytes_non_pow2 = int64_t{64} << 10;
  // The largest message of the segmented algorithms (ring reduce-scatter / all-gather / all-reduce,
  // tree broadcast); bounds their scratch memory.
  int64_t segment_bytes = int64_t{1} << 20;
};

// The AllReduce algorithm `options` picks for `bytes` bytes on `world` ranks (never kAuto).
P2POptions::AllReduceAlgorithm ChooseAllReduce(const P2POptions& options, int world, int64_t bytes);

// A backend named "ring" over `p2p` (which it owns). Runs one call at a time on the calling
// (progress) thread, blocking until it completes or its deadline passes; every rank issues the same
// calls in the same order. Send is buffered (PointToPoint::SendBuffered): it does not wait for
// the receiver, so ranks may each Send and then Recv.
std::unique_ptr<Backend> MakeP2PBackend(std::unique_ptr<PointToPoint> p2p,
                                        P2POptions options = P2POptions{});

}  // namespace loom::comm
