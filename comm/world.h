// The world communicator of an mpirun-launched job, by backend name. MPI is initialised on first
// use (comm/mpi/mpi_env.h) and finalized at exit; this header does not expose MPI.
//
//   LOOM_ASSIGN_OR_RETURN(std::unique_ptr<Communicator> world,
//                         MakeWorldCommunicator("shm", CommOptions::FromEnv()));
//   world->AllReduce(grad, grad, ReduceOp::kSum)->Wait();
//   LOOM_ASSIGN_OR_RETURN(auto dp, world->Split(/*color=*/world->rank() % 2, world->rank()));
#pragma once

#include <memory>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "comm/communicator.h"

namespace loom::comm {

// Collective over every rank of the job (all must pass the same backend). `backend`:
//   "mpi"  MPI's own non-blocking collectives (comm/mpi/mpi_backend.h), any number of hosts;
//   "shm"  loom's shared-memory algorithms (comm/shm/shm_backend.h, options from LOOM_SHM_*),
//          every rank on one host;
//   "ring" loom's ring / halving-doubling / tree algorithms over MPI point-to-point, any hosts;
//   "hier" composed per host (comm/hierarchical.h): reduce-scatter inside each host with loom's
//          shared-memory algorithms, all-reduce across hosts with the ring, all-gather inside;
//          other ops on the ring over all ranks. LOOM_HIER_RANKS_PER_HOST=k treats every k
//          consecutive ranks as a host (to test the composition on one machine).
//   "nccl" NCCL (comm/nccl/nccl_backend.h) on device tensors, one GPU per rank, bootstrapped by
//          MPI; needs the CUDA backend and a visible GPU.
// InvalidArgument naming the choices for any other name; the backend's error if it cannot start.
absl::StatusOr<std::unique_ptr<Communicator>> MakeWorldCommunicator(absl::string_view backend,
                                                                    CommOptions options);

// The number of ranks the launcher started (OMPI_COMM_WORLD_SIZE or PMI_SIZE), without
// initialising MPI or communicating; 1 when the process was not started by a launcher. Lets a
// program validate its layout against the world size before any collective.
int LaunchedWorldSize();

}  // namespace loom::comm
