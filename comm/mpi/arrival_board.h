// ArrivalBoard: the `mpi` backend's side channel for naming the rank a collective waits for. MPI
// cannot say which peer a pending MPI_Iallreduce misses, so every rank also counts the
// collectives it has entered in a small shared-memory board readable by the ranks on its host
// without any MPI progress; on a timeout the waiting rank reads its peers' counters. Ranks on
// other hosts cannot be observed and are reported as such. Internal (includes <mpi.h>).
//
//   LOOM_ASSIGN_OR_RETURN(auto board, ArrivalBoard::Create(comm));
//   board->Enter(++calls);                      // before posting collective #calls
//   ... timed out ...
//   return absl::DeadlineExceededError(board->Describe(calls));   // "waiting for rank(s) 2 ..."
#pragma once

#include <mpi.h>

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "comm/shm/shm_segment.h"

namespace loom::comm {

class ArrivalBoard {
 public:
  // Collective (blocking) over `comm`.
  static absl::StatusOr<std::unique_ptr<ArrivalBoard>> Create(MPI_Comm comm);

  // Records that this rank entered its collective number `call` (1, 2, ...).
  void Enter(uint64_t call);
  // Why collective `call` has not completed: "waiting for rank(s) 1, 3 (they have not entered
  // collective #call on this communicator)", or, when every observable rank entered it,
  // "MPI collective did not complete: ...".
  std::string Describe(uint64_t call) const;
  // The ranks on this host (communicator ranks, ascending) that have not entered `call`.
  std::vector<int> Behind(uint64_t call) const;
  // Ranks of the communicator on this host (this one included).
  int local_size() const { return static_cast<int>(comm_rank_of_local_.size()); }

 private:
  ArrivalBoard() = default;
  uint64_t& Counter(int local) const {
    return *reinterpret_cast<uint64_t*>(segment_->data() + static_cast<size_t>(local) * 64);
  }

  std::unique_ptr<ShmSegment> segment_;
  int comm_size_ = 1;
  int local_rank_ = 0;
  std::vector<int> comm_rank_of_local_;  // node-local rank -> rank in the communicator
};

}  // namespace loom::comm
