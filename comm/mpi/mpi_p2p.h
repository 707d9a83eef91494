// A PointToPoint transport over MPI: the inter-host path of the `ring` backend and of the
// hierarchical communicator. Point-to-point only (MPI_Isend / MPI_Irecv), polled with MPI_Test
// until the deadline, so a missing peer becomes DeadlineExceeded naming it instead of a hang.
//
//   // MPI initialised by MpiEnvironment::Init (or adopted by it).
//   LOOM_ASSIGN_OR_RETURN(std::unique_ptr<PointToPoint> p2p, MakeMpiPointToPoint());
//   Communicator world(MakeP2PBackend(std::move(p2p)), CommOptions::FromEnv());
//
// The transport owns a duplicate of MPI_COMM_WORLD (errors returned, not fatal), so its messages
// never match anyone else's; Split uses MPI_Comm_split. Messages above 1 GiB go as several MPI
// messages (MPI counts are int). SendRecv's sends are MPI's own (buffered below the eager limit,
// otherwise complete when the receiver posts); SendBuffered (a communicator's Send op) copies the
// message and returns, and the copy is released on a later call once MPI is done with it. MPI
// makes progress only inside MPI calls, so a rendezvous-sized buffered send advances while this
// process keeps calling MPI (any later collective, Recv or Send does). After a failure the
// transport is unusable (outstanding requests are cancelled or released); the communicator above
// is poisoned and normally aborts.
#pragma once

#include <memory>

#include "absl/status/statusor.h"
#include "comm/p2p.h"

namespace loom::comm {

// Collective over MPI_COMM_WORLD: a transport over all processes, with rank and size of
// MPI_COMM_WORLD. Goes through MpiEnvironment::Init (which adopts or initialises MPI and fails if
// MPI's thread level is too low) and holds MpiEnvironment's lock around each MPI call, so it works
// under MPI_THREAD_SERIALIZED too. FailedPrecondition after MPI_Finalize. Destroy it (and every
// transport Split from it) before MPI is finalized. Split calls MPI_Comm_split, which the deadline
// cannot bound; the ring backend all-gathers (color, key) first, so every rank is known present.
absl::StatusOr<std::unique_ptr<PointToPoint>> MakeMpiPointToPoint();

}  // namespace loom::comm
