// ShmSegment: one POSIX shared-memory segment mapped by every rank of an MPI communicator whose
// ranks share a host. MPI only bootstraps it: rank 0 creates it (shm_open + ftruncate +
// posix_fallocate, so a full /dev/shm fails here and not with SIGBUS later), broadcasts its name,
// every rank maps it, and rank 0 unlinks it as soon as all have — nothing is left in /dev/shm even
// if the job dies. Internal to the MPI-launched backends (includes <mpi.h>).
//
//   LOOM_ASSIGN_OR_RETURN(std::unique_ptr<ShmSegment> seg,
//                         ShmSegment::Create(comm, 1 << 20, "shm-comm"));
//   char* base = seg->data();   // zero-filled, page-aligned, the same bytes on every rank
//
// A segment created with kOnDemand only reserves its size (a sparse file, mapped without
// populating it): each rank commits the parts it is about to use with Commit, which fails cleanly
// (ResourceExhausted) when /dev/shm is full, instead of a SIGBUS on first touch.
#pragma once

#include <mpi.h>

#include <cstddef>
#include <cstdint>
#include <memory>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace loom::comm {

class ShmSegment {
 public:
  // Collective (blocking) over `comm`; every rank gets the same error if any rank fails.
  enum Backing { kCommitted, kOnDemand };
  static absl::StatusOr<std::unique_ptr<ShmSegment>> Create(MPI_Comm comm, size_t bytes,
                                                            absl::string_view purpose,
                                                            Backing backing = kCommitted);
  ~ShmSegment();  // unmaps (local, never waits on peers)

  // Backs [offset, offset + bytes) with memory (kOnDemand segments; a no-op for committed ones).
  // Any rank may commit any part; pages stay committed until the segment is gone.
  absl::Status Commit(size_t offset, size_t bytes);
  // Free and total bytes of the file system holding a kOnDemand segment (/dev/shm); -1 for a
  // committed segment or when unknown.
  struct Space {
    int64_t free = -1, total = -1;
  };
  Space FileSystemSpace() const;
  ShmSegment(const ShmSegment&) = delete;
  ShmSegment& operator=(const ShmSegment&) = delete;

  char* data() const { return data_; }
  size_t size() const { return size_; }

 private:
  ShmSegment(char* data, size_t size, int fd) : data_(data), size_(size), fd_(fd) {}
  char* data_;
  size_t size_;
  int fd_;  // kOnDemand segments keep their file open for Commit; else -1
};

}  // namespace loom::comm
