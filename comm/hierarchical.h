// A hierarchical backend composed of an intra-host and an inter-host backend, for clusters whose
// links between hosts are much slower than those inside one: AllReduce = ReduceScatter among the
// ranks of a host, AllReduce among the ranks with the same local rank on every host (each moves
// 1/L of the buffer across hosts), AllGather among the ranks of a host. Every other op, and
// AllReduce where composing does not apply (one host, one rank per host, or hosts with different
// numbers of ranks), runs on the flat backend over all ranks.
//
//   std::unique_ptr<Backend> flat = MakeP2PBackend(std::move(p2p));   // over all ranks
//   LOOM_ASSIGN_OR_RETURN(std::unique_ptr<Backend> h,
//                         MakeHierarchicalBackend(std::move(flat), /*host=*/host_id, deadline));
//   Communicator world(std::move(h), CommOptions::FromEnv());        // used like any other
//
// The parts are Backends, not Communicators: a composed call runs inside the one call of its
// Communicator, on its progress thread, under its deadline, sequence number and poisoning, so a
// missing rank in either stage fails that call like any other; sub-Communicators would add
// progress threads, timeouts and poisoning of their own.
//
// Numerics: a 16-bit sum or avg is widened to f32 once, carried through all three stages in f32
// and rounded once (avg divides once, by the world size), so it keeps the one-rounding contract at
// twice the bytes; max, min and integer types travel in their own dtype. The result is bitwise
// identical on every rank. It equals the flat backend's bitwise for integer dtypes, max and min,
// and for floating sums whose partial sums are exact (e.g. integer-valued data below 2^24 in f32);
// otherwise float sums associate differently (host-local partials first), so results may differ
// from the flat path in the last bits.
#pragma once

#include <functional>
#include <memory>

#include "absl/status/statusor.h"
#include "comm/backend.h"

namespace loom::comm {

// Collective over `flat`'s ranks: every rank passes the id of its host (any int; ranks with equal
// ids share a host). Splits `flat` into the host groups (ordered by flat rank) and the cross-host
// groups of equal local rank, and returns a backend named "hierarchical(<flat name>)" over the same
// ranks. Its Split splits `flat` and rebuilds the hierarchy for the new group. Host buffers, one
// call at a time (Backend contract); every rank issues the same calls in the same order.
//
// `make_intra` (optional) builds the intra-host backend instead of splitting `flat`: collective
// over all ranks, called with this rank's host id, returning the backend of the ranks that share it
// (e.g. loom's shared-memory algorithms inside a host, ring across). Sub-communicators of the
// result (Split) split `flat` for both stages.
using IntraHostFactory = std::function<absl::StatusOr<std::unique_ptr<Backend>>(int host)>;
absl::StatusOr<std::unique_ptr<Backend>> MakeHierarchicalBackend(
    std::unique_ptr<Backend> flat, int host, Deadline deadline,
    const IntraHostFactory& make_intra = nullptr);

}  // namespace loom::comm
