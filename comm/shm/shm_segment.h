// ShmSegment: one POSIX shared-memory segment mapped by every rank of an MPI communicator whose
// ranks share a host. MPI only bootstraps it: rank 0 creates it (shm_open + ftruncate +
// posix_fallocate, so a full /dev/shm fails here and not with SIGBUS later), broadcasts its name,
// every rank maps it, and rank 0 unlinks it as soon as all have — nothing is left in /dev/shm even
// if the job dies. Internal to the MPI-launched backends (includes <mpi.h>).
//
//   LOOM_ASSIGN_OR_RETURN(std::unique_ptr<ShmSegment> seg,
//                         ShmSegment::Create(comm, 1 << 20, "shm-comm"));
//   char* base = seg->data();   // zero-filled, page-aligned, the same bytes on every rank
#pragma once

#include <mpi.h>

#include <cstddef>
#include <memory>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace loom::comm {

class ShmSegment {
 public:
  // Collective (blocking) over `comm`; every rank gets the same error if any rank fails.
  static absl::StatusOr<std::unique_ptr<ShmSegment>> Create(MPI_Comm comm, size_t bytes,
                                                            absl::string_view purpose);
  ~ShmSegment();  // unmaps (local, never waits on peers)
  ShmSegment(const ShmSegment&) = delete;
  ShmSegment& operator=(const ShmSegment&) = delete;

  char* data() const { return data_; }
  size_t size() const { return size_; }

 private:
  ShmSegment(char* data, size_t size) : data_(data), size_(size) {}
  char* data_;
  size_t size_;
};

}  // namespace loom::comm
