// The seam between Communicator (API, ordering, progress thread, watchdog, poisoning) and a
// transport that moves bytes: local threads, MPI, POSIX shared memory, sockets, NCCL.
//
// A backend runs one call at a time, to completion, on its communicator's progress thread, in the
// order the caller issued them (every rank issues the same order). Any wait on a peer must give up
// at the deadline with DeadlineExceeded and a message naming the ranks it was waiting for
// ("waiting for rank(s) 2, 3"); the communicator adds the op, sequence number and history.
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "comm/types.h"
#include "runtime/allocator.h"

namespace loom::comm {

struct Deadline {
  std::chrono::steady_clock::time_point at;
  bool Expired() const { return std::chrono::steady_clock::now() >= at; }
};

// One call. Buffers are in the backend's memory() (host memory but for nccl), owned by the caller
// until its Work completes.
//   AllReduce:     in, out: count elements (out may equal in)
//   ReduceScatter: in: size·count, out: count (this rank's block)
//   AllGather:     in: count, out: size·count (rank r's block at r·count)
//   AllToAll:      in, out: size·count (block j of in goes to rank j; block j of out came from j)
//   AllToAllV:     in: Σ send_counts, out: Σ recv_counts, blocks in rank order
//   Broadcast:     out (= in) count elements, from fp.root
//   Send / Recv:   in / out count elements, to / from fp.root, matched by tag
//   Barrier:       no buffers
struct CollectiveArgs {
  Fingerprint fp;
  uint64_t seq = 0;
  const void* in = nullptr;
  void* out = nullptr;
  std::vector<int64_t> send_counts;
  std::vector<int64_t> recv_counts;
  int tag = 0;
};

class Backend {
 public:
  virtual ~Backend() = default;
  virtual int rank() const = 0;
  virtual int size() const = 0;
  virtual std::string name() const = 0;  // "local", "mpi", "shm", ...

  virtual absl::Status Run(const CollectiveArgs& args, Deadline deadline) = 0;
  // Optional caller-thread fast path for short calls. The communicator calls it, on the thread
  // that issued the call, only while no other call of this backend is queued or running, so the
  // order is kept. The backend either finishes the call and returns its status, or, when a peer
  // is not there within `patience`, returns std::nullopt: then it must not have started, or must
  // have left the call so that the next Run() with the same args (same seq) resumes it; the
  // communicator queues that Run() next. Never waits on a peer for longer than `patience`.
  // The default declines every call without starting it.
  virtual std::optional<absl::Status> TryRunNow(const CollectiveArgs& args, Deadline deadline,
                                                std::chrono::nanoseconds patience) {
    (void)args;
    (void)deadline;
    (void)patience;
    return std::nullopt;
  }
  // Collective over this backend's ranks: the backend of the group of ranks passing the same
  // color, ordered by (key, rank).
  virtual absl::StatusOr<std::unique_ptr<Backend>> Split(int color, int key, Deadline deadline) = 0;
  // Optional, for naming the rank a collective really waits for where an algorithm only knows
  // the neighbour it is blocked on. EnterCollective counts this rank into its next collective and
  // returns the collective's number (1, 2, ...; the same sequence on every rank); MissingRanks
  // lists the ranks of this backend known not to have entered collective `call` (empty: none, or
  // unknown). The ring backend over MPI keeps them in a host-shared arrival board; composite
  // backends (hierarchical) enter their flat backend once per call. Defaults: 0 and empty.
  // Optional: an allocator whose memory the backend's peers can reach directly (the shm backend's
  // arena), so collectives on tensors allocated from it can skip a staging copy. nullptr: none.
  virtual runtime::Allocator* shared_allocator() { return nullptr; }
  // Where this backend's buffers live: host memory (every backend but nccl) or a device's. The
  // communicator hands it tensors there as they are and stages the others through
  // staging_allocator() (memory of that kind).
  virtual runtime::Device memory() const { return runtime::Device::kCpu; }
  virtual runtime::Allocator* staging_allocator() { return &runtime::Allocator::Default(); }
  // Called on the caller's thread when a collective is made, in call order, before it is queued
  // (not for Split): a device backend marks the point of the caller's device work that the call
  // must follow. Default: nothing.
  virtual void Issued(const CollectiveArgs& args) { (void)args; }
  // A call that was Issued but will not Run (its communicator was poisoned first).
  virtual void Abandoned(const CollectiveArgs& args) { (void)args; }
  // A call on host buffers whatever memory() says (the fingerprint check's all-gather of a few
  // words); a device backend runs it over a host communicator of the same ranks.
  virtual absl::Status RunOnHost(const CollectiveArgs& args, Deadline deadline) {
    return Run(args, deadline);
  }
  virtual uint64_t EnterCollective() { return 0; }
  virtual std::vector<int> MissingRanks(uint64_t call) const {
    (void)call;
    return {};
  }
  // Takes the whole job down after a fatal communication error (MPI_Abort for MPI-launched
  // backends; abort() by default).
  [[noreturn]] virtual void Abort(int exit_code);
};

// `status` unchanged unless it is DeadlineExceeded and `missing` names ranks: then
// DeadlineExceeded "waiting for rank(s) <missing> (they have not entered this collective; blocked
// on: <status message>)".
absl::Status NameMissingRanks(const absl::Status& status, const std::vector<int>& missing);

}  // namespace loom::comm
