// ShmArena: memory that every rank of an `shm` communicator can write, for tensors that take part
// in its collectives. One shared segment holds a region per rank; each rank allocates from its own
// region (first fit, 64-byte aligned) and peers find a buffer by its offset in the segment, which
// the ranks exchange per call. An all-gather whose outputs all live here writes each rank's block
// straight into every rank's output (comm/shm/all_gather_registered.cc) instead of staging it
// through the ring. Internal to the shm backend (includes <mpi.h>); users reach it as
// Communicator::shared_allocator().
//
//   LOOM_ASSIGN_OR_RETURN(auto arena, ShmArena::Create(comm, 64 << 20));
//   Tensor out = Tensor::Empty({n * count}, DType::kF32, MemoryTag::kComm, arena.get());
//   int64_t off = arena->OffsetOf(out.raw_data(), out.nbytes());   // >= 0: peers can reach it
//
// The segment only reserves address space: Allocate commits memory (posix_fallocate) as it hands
// out bytes beyond what it committed before, and freed bytes stay committed for reuse (like a
// caching allocator) until the communicator is destroyed. When its region is full or /dev/shm
// has no room (each allocation leaves a quarter of /dev/shm, at least 64 MiB, to other
// communicators and processes), Allocate falls back to the process heap (logging once per
// reason), so a caller never fails for lack of arena space; such buffers simply take the staged
// paths. Tensors must be freed before the communicator is destroyed (the segment is unmapped with
// it). Bytes are counted in Allocator::Default(), like every other tensor's.
#pragma once

#include <mpi.h>

#include <cstdint>
#include <map>
#include <memory>
#include <mutex>

#include "absl/status/statusor.h"
#include "comm/shm/shm_segment.h"
#include "runtime/allocator.h"

namespace loom::comm {

class ShmArena : public runtime::Allocator {
 public:
  // Collective (blocking) over `comm` (ranks on one host): a segment of size · bytes_per_rank.
  static absl::StatusOr<std::unique_ptr<ShmArena>> Create(MPI_Comm comm, int64_t bytes_per_rank);
  ~ShmArena() override;

  void* Allocate(size_t bytes, runtime::MemoryTag tag) override;
  void Free(void* ptr, size_t bytes, runtime::MemoryTag tag) override;
  // Arena memory is host memory that only loom's collectives use, and they hold its tensors while
  // they do: a recorded use (meant for device tensors) is a bug, and fails.
  void FreeAfter(void* ptr, size_t bytes, runtime::MemoryTag tag,
                 std::vector<runtime::BlockCache::Fence> fences) override;

  // The offset in the segment of [p, p + bytes) if it lies inside the segment (any rank's
  // region), else -1.
  int64_t OffsetOf(const void* p, int64_t bytes) const;
  // This process's address of segment offset `offset`.
  char* At(int64_t offset) const { return segment_->data() + offset; }

 private:
  ShmArena(std::unique_ptr<ShmSegment> segment, int64_t begin, int64_t end);

  // Commits [committed_end_, end) unless that would leave /dev/shm with less than a quarter of
  // its size (at least kMinHeadroomBytes) free.
  enum Reason { kRegionFull, kNoHeadroom, kCommitFailed };  // why a buffer went to the heap
  absl::Status CommitUpTo(int64_t end, Reason* reason);
  static constexpr int64_t kMinHeadroomBytes = int64_t{64} << 20;

  std::unique_ptr<ShmSegment> segment_;
  int64_t begin_, end_;  // this rank's region of the segment
  std::mutex mu_;
  std::map<int64_t, int64_t> free_;  // offset -> bytes of each free block, coalesced
  int64_t live_ = 0;                 // allocations not yet freed
  int64_t committed_end_ = 0;        // [begin_, committed_end_) is backed by memory
  bool warned_[3] = {};              // per Reason: already logged
};

}  // namespace loom::comm
