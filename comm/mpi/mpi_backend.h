// The `mpi` backend: MPI's own non-blocking collectives (MPI_Iallreduce, MPI_Ireduce_scatter_block,
// MPI_Iallgather, MPI_Ialltoall(v), MPI_Ibcast, MPI_Ibarrier) and buffered MPI_Isend/MPI_Improbe
// point-to-point — the baseline every loom algorithm is measured against.
//
//   absl::StatusOr<std::unique_ptr<Backend>> b = MakeMpiWorldBackend();
//   Communicator world(std::move(b).value(), CommOptions::FromEnv());
//   world.AllReduce(grad, grad, ReduceOp::kSum)->Wait();
//   // or simply: MakeWorldCommunicator("mpi", CommOptions::FromEnv())   (comm/world.h)
//
// Buffers are host memory, owned by the caller until the Work completes; every rank calls the
// collectives in the same order. Waits are MPI_Test loops bounded by the call's deadline; a
// timed-out collective names the ranks on this host that have not entered it (ArrivalBoard).
// Numerics: MPI has no 16-bit float types, so bf16/f16 reductions convert to f32 in a scratch
// buffer, reduce in f32 and round once; avg is MPI_SUM then a division by the size; the order in
// which MPI combines ranks is MPI's (exact for integer-valued data, not rank-ordered in general).
// Split is MPI_Comm_split. Abort is MPI_Abort(MPI_COMM_WORLD). Counts are limited to 2^31-1.
// A collective that timed out cannot be cancelled in MPI: its buffers may still be written if the
// missing peer arrives later, which is one more reason the default is to abort the job.
#pragma once

#include <memory>

#include "absl/status/statusor.h"
#include "comm/backend.h"

namespace loom::comm {

// Initialises MPI if needed (MpiEnvironment::Init) and returns the backend of MPI_COMM_WORLD (a
// duplicate, so loom's traffic never matches the program's own MPI calls). Collective.
absl::StatusOr<std::unique_ptr<Backend>> MakeMpiWorldBackend();

}  // namespace loom::comm
