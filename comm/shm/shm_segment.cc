#include "comm/shm/shm_segment.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <string>

#include "absl/strings/str_cat.h"
#include "comm/mpi/mpi_util.h"

namespace loom::comm {
namespace {

using mpi_detail::LockMpi;
using mpi_detail::MpiStatus;

// What rank 0 broadcasts: the segment's name, or why it could not create it.
struct Announcement {
  char name[64];
  char error[448];
};

std::string Errno(absl::string_view call, int err) {
  return absl::StrCat(call, ": ", std::strerror(err));
}

// Backs [offset, offset + bytes) of the file with memory; returns "" or an error text.
std::string Allocate(int fd, absl::string_view name, size_t offset, size_t bytes) {
  int rc;
  do {  // a signal (a profiler's timer, SIGCHLD) interrupts long tmpfs allocations
    rc = posix_fallocate(fd, static_cast<off_t>(offset), static_cast<off_t>(bytes));
  } while (rc == EINTR);
  if (rc == 0) return "";
  return absl::StrCat(
      Errno(absl::StrCat("posix_fallocate(", name, ", ", bytes, " bytes at ", offset, ")"), rc),
      rc == ENOSPC ? " — /dev/shm is too small; enlarge it (docker run --shm-size=1g)" : "");
}

// Creates and sizes the segment; returns "" or an error text.
std::string CreateFile(const std::string& name, size_t bytes, ShmSegment::Backing backing,
                       int* fd) {
  *fd = shm_open(name.c_str(), O_CREAT | O_EXCL | O_RDWR, 0600);
  if (*fd < 0) return Errno(absl::StrCat("shm_open(", name, ")"), errno);
  if (ftruncate(*fd, static_cast<off_t>(bytes)) != 0) {
    return Errno(absl::StrCat("ftruncate(", name, ", ", bytes, ")"), errno);
  }
  return backing == ShmSegment::kCommitted ? Allocate(*fd, name, 0, bytes) : "";
}

}  // namespace

absl::StatusOr<std::unique_ptr<ShmSegment>> ShmSegment::Create(MPI_Comm comm, size_t bytes,
                                                               absl::string_view purpose,
                                                               Backing backing) {
  static std::atomic<int> counter{0};
  int rank = 0;
  {
    std::unique_lock<std::mutex> lock = LockMpi();
    MPI_Comm_rank(comm, &rank);
  }
  Announcement note{};
  int fd = -1;
  if (rank == 0) {
    // Unpredictable (64 random bits), so no other process can guess it to pre-create or race for
    // it; the segment is 0600 and unlinked once every rank has mapped it.
    uint64_t nonce = 0;
    if (getrandom(&nonce, sizeof(nonce), 0) != static_cast<ssize_t>(sizeof(nonce))) {
      nonce = static_cast<uint64_t>(std::chrono::steady_clock::now().time_since_epoch().count());
    }
    const std::string name =
        absl::StrCat("/loom-", purpose, "-", getpid(), "-", counter++, "-", absl::Hex(nonce));
    std::snprintf(note.name, sizeof(note.name), "%s", name.c_str());
    const std::string error = CreateFile(name, bytes, backing, &fd);
    if (!error.empty()) {
      std::snprintf(note.error, sizeof(note.error), "%s", error.c_str());
      if (fd >= 0) close(fd);
      shm_unlink(name.c_str());
    }
  }
  {
    std::unique_lock<std::mutex> lock = LockMpi();
    absl::Status s = MpiStatus(MPI_Bcast(&note, sizeof(note), MPI_BYTE, 0, comm), "MPI_Bcast");
    if (!s.ok()) return s;
  }
  if (note.error[0] != '\0') {
    return absl::ResourceExhaustedError(
        absl::StrCat("creating the shared-memory segment failed on rank 0: ", note.error));
  }
  std::string error;
  if (rank != 0) {
    fd = shm_open(note.name, O_RDWR, 0600);
    if (fd < 0) error = Errno(absl::StrCat("shm_open(", note.name, ")"), errno);
  }
  void* data = MAP_FAILED;
  if (fd >= 0) {
    const int flags =
        backing == kCommitted ? MAP_SHARED | MAP_POPULATE : MAP_SHARED | MAP_NORESERVE;
    data = mmap(nullptr, bytes, PROT_READ | PROT_WRITE, flags, fd, 0);
    if (data == MAP_FAILED) error = Errno("mmap", errno);
    // A core dump would fault in (and so allocate) every hole of a sparse shared mapping.
    if (data != MAP_FAILED && backing == kOnDemand) madvise(data, bytes, MADV_DONTDUMP);
    if (backing == kCommitted || data == MAP_FAILED) {
      close(fd);
      fd = -1;
    }
  }
  // Everyone reports; after this no rank will open the name again, so rank 0 unlinks it.
  int ok = error.empty() ? 1 : 0, all_ok = 0;
  {
    std::unique_lock<std::mutex> lock = LockMpi();
    absl::Status s =
        MpiStatus(MPI_Allreduce(&ok, &all_ok, 1, MPI_INT, MPI_MIN, comm), "MPI_Allreduce");
    if (rank == 0) shm_unlink(note.name);
    if (!s.ok()) error = std::string(s.message());
  }
  if (!all_ok || !error.empty()) {
    if (data != MAP_FAILED) munmap(data, bytes);
    if (fd >= 0) close(fd);
    return absl::UnavailableError(
        absl::StrCat("mapping the shared-memory segment ", note.name, " failed",
                     error.empty() ? " on another rank" : absl::StrCat(": ", error)));
  }
  return std::unique_ptr<ShmSegment>(new ShmSegment(static_cast<char*>(data), bytes, fd));
}

absl::Status ShmSegment::Commit(size_t offset, size_t bytes) {
  if (fd_ < 0 || bytes == 0) return absl::OkStatus();
  const std::string error = Allocate(fd_, "shared segment", offset, bytes);
  if (error.empty()) return absl::OkStatus();
  return absl::ResourceExhaustedError(error);
}

ShmSegment::Space ShmSegment::FileSystemSpace() const {
  struct statvfs st;
  if (fd_ < 0 || fstatvfs(fd_, &st) != 0) return {};
  const int64_t unit = static_cast<int64_t>(st.f_frsize);
  return {static_cast<int64_t>(st.f_bavail) * unit, static_cast<int64_t>(st.f_blocks) * unit};
}

ShmSegment::~ShmSegment() {
  munmap(data_, size_);
  if (fd_ >= 0) close(fd_);
}

}  // namespace loom::comm
