#include "comm/mpi/arrival_board.h"

#include <algorithm>
#include <atomic>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "comm/mpi/mpi_util.h"

namespace loom::comm {

using mpi_detail::LockMpi;
using mpi_detail::MpiStatus;

absl::StatusOr<std::unique_ptr<ArrivalBoard>> ArrivalBoard::Create(MPI_Comm comm) {
  std::unique_ptr<ArrivalBoard> board(new ArrivalBoard());
  MPI_Comm node = MPI_COMM_NULL;
  int local_size = 0;
  {
    std::unique_lock<std::mutex> lock = LockMpi();
    int rank = 0;
    MPI_Comm_rank(comm, &rank);
    MPI_Comm_size(comm, &board->comm_size_);
    absl::Status s =
        MpiStatus(MPI_Comm_split_type(comm, MPI_COMM_TYPE_SHARED, rank, MPI_INFO_NULL, &node),
                  "MPI_Comm_split_type");
    if (!s.ok()) return s;
    MPI_Comm_rank(node, &board->local_rank_);
    MPI_Comm_size(node, &local_size);
    MPI_Group node_group, comm_group;
    MPI_Comm_group(node, &node_group);
    MPI_Comm_group(comm, &comm_group);
    std::vector<int> locals(static_cast<size_t>(local_size));
    for (int i = 0; i < local_size; ++i) locals[i] = i;
    board->comm_rank_of_local_.resize(static_cast<size_t>(local_size));
    MPI_Group_translate_ranks(node_group, local_size, locals.data(), comm_group,
                              board->comm_rank_of_local_.data());
    MPI_Group_free(&node_group);
    MPI_Group_free(&comm_group);
  }
  absl::StatusOr<std::unique_ptr<ShmSegment>> seg =
      ShmSegment::Create(node, static_cast<size_t>(local_size) * 64, "board");
  {
    std::unique_lock<std::mutex> lock = LockMpi();
    MPI_Comm_free(&node);
  }
  if (!seg.ok()) return seg.status();
  board->segment_ = std::move(seg).value();
  return board;
}

void ArrivalBoard::Enter(uint64_t call) {
  std::atomic_ref<uint64_t>(Counter(local_rank_)).store(call, std::memory_order_release);
}

std::vector<int> ArrivalBoard::Behind(uint64_t call) const {
  std::vector<int> behind;
  for (int l = 0; l < static_cast<int>(comm_rank_of_local_.size()); ++l) {
    if (l == local_rank_) continue;
    if (std::atomic_ref<uint64_t>(Counter(l)).load(std::memory_order_acquire) < call) {
      behind.push_back(comm_rank_of_local_[l]);
    }
  }
  std::sort(behind.begin(), behind.end());
  return behind;
}

std::string ArrivalBoard::Describe(uint64_t call) const {
  const std::vector<int> behind = Behind(call);
  const int remote = comm_size_ - static_cast<int>(comm_rank_of_local_.size());
  const std::string elsewhere =
      remote > 0 ? absl::StrCat("; ", remote, " rank(s) on other hosts cannot be observed") : "";
  if (!behind.empty()) {
    return absl::StrCat("waiting for rank(s) ", absl::StrJoin(behind, ", "),
                        " (they have not entered this collective)", elsewhere);
  }
  return absl::StrCat("MPI collective did not complete (every rank on this host entered it",
                      elsewhere, ")");
}

}  // namespace loom::comm
