// The `nccl` backend: a Communicator whose buffers are device memory, moved by NCCL (issue #14,
// docs/gpu.md).
//
//   LOOM_ASSIGN_OR_RETURN(nccl::Api* api, nccl::NcclApi());
//   LOOM_ASSIGN_OR_RETURN(std::unique_ptr<Backend> b,
//                         MakeNcclBackend(api, std::move(host_world), deadline));
//   Communicator world(std::move(b), options);
//   world.AllReduce(grad, grad, ReduceOp::kSum)->Wait();   // grad on the GPU
//
// Same semantics as the host backends (comm/communicator.h): calls ordered, sequence numbers,
// fingerprints, deadlines, poisoning. What differs:
// - Made over a host communicator of the same ranks (`bootstrap`, e.g. the MPI world): rank 0
//   makes NCCL's unique id and the bootstrap broadcasts it; initialisation is non-blocking and
//   polled until the deadline. The bootstrap also checks that no two ranks share a GPU (NCCL
//   refuses that; ranks sharing one use a host backend, whose device collectives are staged).
// - Each call is queued on the backend's own stream after the point of the caller's device work
//   (the default stream) at which it was made (an event recorded then), so it overlaps with
//   compute queued later; the call's Work completes when the progress thread, polling an event
//   recorded after it, sees it done. That thread is the watchdog: while it waits it polls
//   ncclCommGetAsyncError, and on an error or at the deadline it aborts the NCCL communicator
//   (ncclCommAbort) and fails the call, naming op, sequence number and rank.
// - One call is on the device at a time (the next is queued once the previous is done).
// - Calls on different communicators (the world and its splits) are queued in the order the rank
//   made them: each takes a ticket when made and is queued only after every earlier ticket (NCCL
//   can deadlock when ranks queue operations of different communicators in different orders and
//   their kernels cannot run at once). That order is the same on every rank where the program
//   makes its calls at points of its own: data parallelism does so on NCCL (ordered issue,
//   DataParallel::Options), rather than when a Test() sees a reduction complete.
// - AllToAll and AllToAllV are grouped sends and receives (one per peer with a non-zero count);
//   Barrier is a one-element all-reduce.
// - Send is not buffered: it completes once the peer's Recv has been posted and the data moved,
//   and tags are not matched (NCCL has none): a pair's messages match in the order they are
//   issued. Two ranks that both send before they receive wait for each other until the deadline.
// - 16-bit dtypes are reduced by NCCL's own kernels (bf16/f16 arithmetic per step), not in f32 as
//   the host backends do.
#pragma once

#include <functional>
#include <memory>

#include "absl/status/statusor.h"
#include "comm/backend.h"
#include "comm/communicator.h"
#include "comm/nccl/api.h"

namespace loom::comm {

// Collective over `bootstrap`'s ranks. `abort_job` takes the job down after a fatal error
// (Backend::Abort; nullptr: abort()).
absl::StatusOr<std::unique_ptr<Backend>> MakeNcclBackend(
    nccl::Api* api, std::unique_ptr<Communicator> bootstrap, Deadline deadline,
    std::function<void(int)> abort_job = nullptr);

}  // namespace loom::comm
