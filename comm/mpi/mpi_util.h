// Internal helpers of loom's MPI-launched backends (comm/mpi, comm/shm): MPI error codes as
// absl::Status, dtype and reduction mapping, deadline-bounded request waits, and the buffered
// point-to-point mailbox both backends use for Send/Recv. Includes <mpi.h>, so only .cc files of
// those backends include it; nothing outside them sees MPI types.
//
//   LOOM_RETURN_IF_ERROR(MpiStatus(MPI_Ibarrier(comm, &request), "MPI_Ibarrier"));
//   SpinWait wait(deadline, std::nullopt, /*oversubscribed=*/false);
//   if (WaitRequest(&request, nullptr, wait) == SpinWait::kTimedOut) { ... }
#pragma once

#include <mpi.h>

#include <cstdint>
#include <list>
#include <mutex>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "comm/backend.h"
#include "comm/exchange.h"
#include "comm/spin_wait.h"
#include "runtime/dtype.h"

namespace loom::comm::mpi_detail {

// OK for MPI_SUCCESS, else Internal naming the call and MPI's error string.
absl::Status MpiStatus(int rc, absl::string_view call);

// True once MPI_Finalize ran (destructors of leaked communicators must not call MPI then).
bool MpiFinalized();

// The lock loom holds around its MPI calls (owns nothing under MPI_THREAD_MULTIPLE).
std::unique_lock<std::mutex> LockMpi();

// MPI_Comm_split of `comm` into the group `plan` describes (color: the group's lowest old rank, as
// MPI colors must be non-negative; key: the new rank). Blocking: call it only once every rank is
// known to be present (after ExchangeSplitPlan).
absl::StatusOr<MPI_Comm> SplitMpiComm(MPI_Comm comm, const SplitPlan& plan);

// Collective over `comm`: the lowest rank of `comm` on this rank's host (ranks that share memory,
// MPI_COMM_TYPE_SHARED), the same on every rank of a host. `ranks_per_host` > 0 pretends every
// `ranks_per_host` consecutive ranks form a host instead (to test host-aware algorithms on one
// machine).
absl::StatusOr<int> MpiHostId(MPI_Comm comm, int ranks_per_host);

// Element type for moving bytes of `dtype` (bf16/f16 travel as MPI_UINT16_T; MPI has no 16-bit
// floats, so reductions over them convert to f32 first).
MPI_Datatype MpiType(runtime::DType dtype);
// MPI's reduction for `op` (avg is a sum, divided afterwards).
MPI_Op MpiOp(ReduceOp op);

// Tests `request` until it completes (kKeepWaiting is never returned) or `wait` gives up / times
// out; MPI_Test drives MPI's progress, so the spin phase matters for latency.
SpinWait::Verdict WaitRequest(MPI_Request* request, MPI_Status* status, SpinWait& wait);

// Buffered Send and deadline-bounded Recv over one MPI communicator. Send copies the message and
// returns once MPI has it (so a rank may Send and then Recv without waiting for the peer, as every
// loom backend allows); sends in flight finish in the background and are reaped on later calls.
// Messages between a pair of ranks with the same tag arrive in order. Used by one thread at a time.
class MpiMailbox {
 public:
  explicit MpiMailbox(MPI_Comm comm) : comm_(comm) {}
  // Waits up to a second for sends in flight; a message no peer ever receives keeps its buffer
  // (deliberately leaked, since MPI may still read it).
  ~MpiMailbox();
  MpiMailbox(const MpiMailbox&) = delete;
  MpiMailbox& operator=(const MpiMailbox&) = delete;

  // args.fp.root is the peer, args.tag the tag (0 <= tag <= MPI_TAG_UB).
  absl::Status Send(const CollectiveArgs& args);
  // DeadlineExceeded "waiting for rank(s) P (tag T)" if nothing arrives in time (the receive is
  // cancelled); InvalidArgument if the message's size differs from the buffer's.
  absl::Status Recv(const CollectiveArgs& args, Deadline deadline, bool oversubscribed);

 private:
  struct InFlight {
    MPI_Request request;
    std::vector<char> buffer;
  };
  void Reap();

  MPI_Comm comm_;
  std::list<InFlight> sends_;
};

}  // namespace loom::comm::mpi_detail
