// PointToPoint: the transport seam under loom's own collective algorithms (ring, recursive
// halving-doubling, pairwise, tree, dissemination; comm/algorithms/). A transport only moves bytes
// between the ranks of a fixed group; the algorithms and the `ring` backend (comm/p2p_backend.h)
// are written once on top of it. Implementations: thread-ranks in one process
// (comm/local/local_p2p.h) and MPI (comm/mpi/mpi_p2p.h).
//
//   std::vector<std::unique_ptr<PointToPoint>> ranks = MakeLocalPointToPoint(4);
//   PointToPoint& p2p = *ranks[r];                        // used by thread r only
//   const int next = (r + 1) % 4, prev = (r + 3) % 4;
//   LOOM_RETURN_IF_ERROR(p2p.SendRecv(mine, n, next, theirs, n, prev, /*tag=*/0, deadline));
//
// SendRecv sends and receives at the same time, so a ring in which every rank sends to its
// successor and receives from its predecessor cannot deadlock even on a rendezvous transport
// (MPI above its eager limit). Messages between one (source, destination, tag) arrive in the order
// they were sent; different tags never match each other.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <memory>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "comm/backend.h"

namespace loom::comm {

class PointToPoint {
 public:
  // Passed as `dst` or `src` to skip that half of a SendRecv.
  static constexpr int kNoPeer = -1;

  virtual ~PointToPoint() = default;

  // This rank and the number of ranks in the group (ranks are 0..size()-1).
  virtual int rank() const = 0;
  virtual int size() const = 0;

  // Sends `send_bytes` bytes of host memory at `send` to rank `dst` and receives a message of
  // exactly `recv_bytes` bytes from rank `src` into `recv`, both tagged `tag` (>= 0), and returns
  // when both have completed: `send` may then be reused and `recv` read. Either half may be skipped
  // with kNoPeer; a rank may send to or receive from itself only through its own memory, never
  // through the transport. Zero-byte messages are real messages (they synchronise). Blocking; gives
  // up at `deadline` with DeadlineExceeded("waiting for rank(s) <peer> ...") naming the peer it
  // still waits for; a message of the wrong size is InvalidArgument. Not thread-safe: one caller
  // at a time (a communicator's progress thread). The buffers stay owned by the caller.
  virtual absl::Status SendRecv(const void* send, size_t send_bytes, int dst, void* recv,
                                size_t recv_bytes, int src, int tag, Deadline deadline) = 0;

  // The two halves alone. Send returns once the data has been handed over: at once on a buffering
  // transport (local threads; MPI below its eager limit), otherwise when `dst` receives it, so
  // rings should use SendRecv.
  absl::Status Send(const void* data, size_t bytes, int dst, int tag, Deadline deadline) {
    return SendRecv(data, bytes, dst, nullptr, 0, kNoPeer, tag, deadline);
  }
  absl::Status Recv(void* data, size_t bytes, int src, int tag, Deadline deadline) {
    return SendRecv(nullptr, 0, kNoPeer, data, bytes, src, tag, deadline);
  }

  // A user-level send (a communicator's Send op): returns without waiting for `dst` to receive, so
  // that ranks may each Send and then Recv, as every loom backend allows. The transport copies
  // `data` where it must and finishes the transfer during this rank's later calls on it (a failure
  // then surfaces from a later call); messages still follow the ordering rule above. The default
  // is Send, right for transports whose sends never wait for the receiver (local threads).
  virtual absl::Status SendBuffered(const void* data, size_t bytes, int dst, int tag,
                                    Deadline deadline) {
    return Send(data, bytes, dst, tag, deadline);
  }

  // Collective over this group: every rank calls Split, in the same order relative to its other
  // calls, passing the members of its own new group as ranks of this group in new-rank order
  // (groups are disjoint and each contains its caller). Returns the transport of the caller's new
  // group, independent of this one (its messages never match this group's).
  virtual absl::StatusOr<std::unique_ptr<PointToPoint>> Split(const std::vector<int>& members,
                                                              Deadline deadline) = 0;

  // An optional side channel for naming the rank a collective really waits for, where an
  // algorithm can only name the neighbour it is blocked on (in a ring everyone else waits on a
  // neighbour of the missing rank). The MPI transport counts the collectives each rank entered in
  // a board shared by the ranks of a host (comm/mpi/arrival_board.h). EnterCollective records that
  // this rank entered its collective number `call` (1, 2, ... counted alike on every rank);
  // MissingRanks lists the ranks known not to have entered it (empty when none or unknown).
  virtual void EnterCollective(uint64_t call) { (void)call; }
  virtual std::vector<int> MissingRanks(uint64_t call) const {
    (void)call;
    return {};
  }
  // Takes the whole job down after a fatal error (MPI_Abort for MPI; abort() by default).
  [[noreturn]] virtual void Abort(int exit_code) {
    (void)exit_code;
    std::abort();
  }
};

}  // namespace loom::comm
