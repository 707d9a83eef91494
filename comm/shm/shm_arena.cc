#include "comm/shm/shm_arena.h"

#include <algorithm>
#include <cstdint>
#include <iterator>

#include "absl/strings/str_cat.h"
#include "comm/mpi/mpi_util.h"
#include "runtime/base/check.h"
#include "runtime/base/logging.h"
#include "runtime/base/status_macros.h"

namespace loom::comm {
namespace {

int64_t Align(int64_t n) {
  const int64_t a = static_cast<int64_t>(runtime::kAllocationAlignment);
  return (n + a - 1) / a * a;
}

}  // namespace

absl::StatusOr<std::unique_ptr<ShmArena>> ShmArena::Create(MPI_Comm comm, int64_t bytes_per_rank) {
  int rank = 0, size = 1;
  {
    std::unique_lock<std::mutex> lock = mpi_detail::LockMpi();
    MPI_Comm_rank(comm, &rank);
    MPI_Comm_size(comm, &size);
  }
  const int64_t region = Align(bytes_per_rank);
  absl::StatusOr<std::unique_ptr<ShmSegment>> segment =
      ShmSegment::Create(comm, static_cast<size_t>(region * size), "arena", ShmSegment::kOnDemand);
  if (!segment.ok()) return segment.status();
  return std::unique_ptr<ShmArena>(
      new ShmArena(std::move(segment).value(), region * rank, region * (rank + 1)));
}

ShmArena::ShmArena(std::unique_ptr<ShmSegment> segment, int64_t begin, int64_t end)
    : segment_(std::move(segment)), begin_(begin), end_(end) {
  if (end_ > begin_) free_[begin_] = end_ - begin_;
  committed_end_ = begin_;
}

ShmArena::~ShmArena() {
  if (live_ > 0) {
    LOOM_LOG(ERROR) << live_ << " tensor(s) from a communicator's shared arena outlive it; "
                    << "their memory is unmapped now";
  }
}

absl::Status ShmArena::CommitUpTo(int64_t end, Reason* reason) {
  if (end <= committed_end_) return absl::OkStatus();
  const int64_t grow = end - committed_end_;
  const ShmSegment::Space space = segment_->FileSystemSpace();
  const int64_t headroom = std::max<int64_t>(space.total / 4, kMinHeadroomBytes);
  if (space.free >= 0 && space.free - grow < headroom) {
    *reason = kNoHeadroom;
    return absl::ResourceExhaustedError(
        absl::StrCat("committing ", grow, " more bytes would leave /dev/shm (", space.total,
                     " bytes) with less than ", headroom,
                     " free, which other communicators and processes need"));
  }
  // From the committed end up, so no uncommitted gap is ever left below it (first fit does not
  // start a block above it anyway).
  *reason = kCommitFailed;
  LOOM_RETURN_IF_ERROR(
      segment_->Commit(static_cast<size_t>(committed_end_), static_cast<size_t>(grow)));
  committed_end_ = end;
  return absl::OkStatus();
}

void* ShmArena::Allocate(size_t bytes, runtime::MemoryTag tag) {
  if (bytes == 0) return nullptr;
  const int64_t need = Align(static_cast<int64_t>(bytes));
  {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = free_.begin();
    while (it != free_.end() && it->second < need) ++it;
    Reason reason = kRegionFull;
    absl::Status why;
    if (it != free_.end()) {
      const int64_t offset = it->first, left = it->second - need;
      why = CommitUpTo(offset + need, &reason);
      if (why.ok()) {
        free_.erase(it);
        if (left > 0) free_[offset + need] = left;
        ++live_;
        runtime::Allocator::Default().Record(bytes, tag);
        return At(offset);
      }
    } else {
      why = absl::ResourceExhaustedError(absl::StrCat(
          "its region of ", end_ - begin_, " bytes per rank (LOOM_SHM_ARENA_BYTES) is full"));
    }
    // Once per kind of reason.
    if (!warned_[reason]) {
      warned_[reason] = true;
      LOOM_LOG(WARNING) << "a " << bytes << "-byte buffer does not fit the communicator's shared "
                        << "arena (" << why.message() << "); it comes from the heap and takes the "
                        << "staged collective paths";
    }
  }
  return runtime::Allocator::Default().Allocate(bytes, tag);
}

void ShmArena::FreeAfter(void* ptr, size_t bytes, runtime::MemoryTag tag,
                         std::vector<runtime::BlockCache::Fence> fences) {
  LOOM_CHECK(fences.empty()) << "a shared-arena tensor of " << bytes
                             << " bytes had a recorded use (RecordUse is for device tensors)";
  Free(ptr, bytes, tag);
}

void ShmArena::Free(void* ptr, size_t bytes, runtime::MemoryTag tag) {
  if (ptr == nullptr) return;
  const int64_t offset = OffsetOf(ptr, static_cast<int64_t>(bytes));
  if (offset < 0) {
    runtime::Allocator::Default().Free(ptr, bytes, tag);
    return;
  }
  std::lock_guard<std::mutex> lock(mu_);
  int64_t start = offset, size = Align(static_cast<int64_t>(bytes));
  auto next = free_.lower_bound(start);
  if (next != free_.end() && start + size == next->first) {  // merge with the block after
    size += next->second;
    next = free_.erase(next);
  }
  if (next != free_.begin()) {
    auto prev = std::prev(next);
    if (prev->first + prev->second == start) {  // and with the block before
      start = prev->first;
      size += prev->second;
      free_.erase(prev);
    }
  }
  free_[start] = size;
  --live_;
  runtime::Allocator::Default().Unrecord(bytes, tag);
}

int64_t ShmArena::OffsetOf(const void* p, int64_t bytes) const {
  const uintptr_t c = reinterpret_cast<uintptr_t>(p);
  const uintptr_t base = reinterpret_cast<uintptr_t>(segment_->data());
  if (c < base || c + static_cast<uintptr_t>(bytes) > base + segment_->size()) return -1;
  return static_cast<int64_t>(c - base);
}

}  // namespace loom::comm
