#include "runtime/io/file.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <filesystem>
#include <system_error>
#include <utility>

#include "absl/strings/str_cat.h"
#include "runtime/base/fault.h"
#include "runtime/base/status_macros.h"

namespace loom::runtime::io {
namespace {

// Linux transfers at most 0x7ffff000 bytes per read/write call; larger requests loop.
constexpr size_t kMaxIoBytes = size_t{1} << 30;

absl::Status ErrnoError(int error_number, absl::string_view path, absl::string_view operation) {
  return absl::ErrnoToStatus(error_number, absl::StrCat(path, ": ", operation));
}

std::string DirName(const std::string& path) {
  const size_t slash = path.find_last_of('/');
  if (slash == std::string::npos) return ".";
  if (slash == 0) return "/";
  return path.substr(0, slash);
}

// Distinguishes temporary files of concurrent writers in one process (ranks as threads).
std::atomic<uint64_t> temp_sequence{0};

void CloseQuietly(int fd) {
  if (fd >= 0) ::close(fd);
}

}  // namespace

absl::StatusOr<std::string> ReadFile(const std::string& path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return ErrnoError(errno, path, "open for reading");
  struct stat st;
  if (::fstat(fd, &st) != 0) {
    const int err = errno;
    CloseQuietly(fd);
    return ErrnoError(err, path, "stat");
  }
  if (S_ISDIR(st.st_mode)) {
    CloseQuietly(fd);
    return absl::FailedPreconditionError(absl::StrCat(path, ": is a directory, not a file"));
  }
  std::string out;
  // st_size is a hint only (files in /proc report 0): read until end of file. One spare byte lets
  // the read that sees the end of a regular file happen without growing the buffer.
  out.resize(st.st_size > 0 ? static_cast<size_t>(st.st_size) + 1 : 4096);
  size_t filled = 0;
  while (true) {
    if (filled == out.size()) out.resize(out.size() * 2);
    const ssize_t r = ::read(fd, out.data() + filled, std::min(out.size() - filled, kMaxIoBytes));
    if (r < 0) {
      if (errno == EINTR) continue;
      const int err = errno;
      CloseQuietly(fd);
      return ErrnoError(err, path, "read");
    }
    if (r == 0) break;
    filled += static_cast<size_t>(r);
  }
  CloseQuietly(fd);
  out.resize(filled);
  return out;
}

absl::Status WriteFileAtomic(const std::string& path, absl::string_view bytes, int mode) {
  LOOM_ASSIGN_OR_RETURN(AtomicFileWriter writer, AtomicFileWriter::Open(path, mode));
  LOOM_RETURN_IF_ERROR(writer.Append(bytes));
  return writer.Commit();
}

AtomicFileWriter::AtomicFileWriter(std::string path, std::string temp_path, int fd)
    : path_(std::move(path)), temp_path_(std::move(temp_path)), fd_(fd) {}

absl::StatusOr<AtomicFileWriter> AtomicFileWriter::Open(const std::string& path, int mode) {
  std::string temp_path = absl::StrCat(path, ".tmp.", ::getpid(), ".", temp_sequence.fetch_add(1));
  const int fd = ::open(temp_path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, mode);
  if (fd < 0) return ErrnoError(errno, path, absl::StrCat("create temporary file ", temp_path));
  return AtomicFileWriter(path, std::move(temp_path), fd);
}

AtomicFileWriter::AtomicFileWriter(AtomicFileWriter&& other) noexcept
    : path_(std::move(other.path_)),
      temp_path_(std::exchange(other.temp_path_, std::string())),
      fd_(std::exchange(other.fd_, -1)),
      bytes_written_(other.bytes_written_),
      status_(std::move(other.status_)),
      finished_(std::exchange(other.finished_, true)) {}

AtomicFileWriter& AtomicFileWriter::operator=(AtomicFileWriter&& other) noexcept {
  if (this != &other) {
    Discard();
    path_ = std::move(other.path_);
    temp_path_ = std::exchange(other.temp_path_, std::string());
    fd_ = std::exchange(other.fd_, -1);
    bytes_written_ = other.bytes_written_;
    status_ = std::move(other.status_);
    finished_ = std::exchange(other.finished_, true);
  }
  return *this;
}

AtomicFileWriter::~AtomicFileWriter() { Discard(); }

void AtomicFileWriter::Discard() {
  CloseQuietly(fd_);
  fd_ = -1;
  if (!temp_path_.empty()) ::unlink(temp_path_.c_str());
  temp_path_.clear();
}

absl::Status AtomicFileWriter::Append(absl::string_view bytes) {
  return Append(bytes.data(), bytes.size());
}

absl::Status AtomicFileWriter::Append(const void* data, size_t n) {
  if (finished_) {
    return absl::FailedPreconditionError(
        absl::StrCat(path_, ": AtomicFileWriter::Append after Commit"));
  }
  if (!status_.ok()) return status_;
  const char* p = static_cast<const char*>(data);
  while (n > 0) {
    const int injected = base::FaultAt("file.write", path_);  // tests/fault: a full disk, EIO
    const ssize_t w =
        injected != 0 ? (errno = injected, -1) : ::write(fd_, p, std::min(n, kMaxIoBytes));
    if (w < 0) {
      if (errno == EINTR) continue;
      status_ = ErrnoError(errno, path_, absl::StrCat("write to temporary file ", temp_path_));
      Discard();
      return status_;
    }
    p += w;
    n -= static_cast<size_t>(w);
    bytes_written_ += static_cast<uint64_t>(w);
  }
  return absl::OkStatus();
}

absl::Status AtomicFileWriter::Commit() {
  if (finished_) {
    return absl::FailedPreconditionError(
        absl::StrCat(path_, ": AtomicFileWriter::Commit called twice"));
  }
  finished_ = true;
  if (!status_.ok()) {
    Discard();
    return status_;
  }
  if (::fsync(fd_) != 0) {
    status_ = ErrnoError(errno, path_, absl::StrCat("fsync temporary file ", temp_path_));
    Discard();
    return status_;
  }
  // close() can report a deferred write error (NFS, quota), so it is checked like a write.
  const int close_result = ::close(std::exchange(fd_, -1));
  if (close_result != 0) {
    status_ = ErrnoError(errno, path_, absl::StrCat("close temporary file ", temp_path_));
    Discard();
    return status_;
  }
  if (::rename(temp_path_.c_str(), path_.c_str()) != 0) {
    status_ = ErrnoError(errno, path_, absl::StrCat("rename from ", temp_path_));
    Discard();
    return status_;
  }
  temp_path_.clear();
  status_ = FsyncDirectory(DirName(path_));
  return status_;
}

RandomAccessFile::RandomAccessFile(std::string path, int fd, uint64_t size)
    : path_(std::move(path)), fd_(fd), size_(size) {}

absl::StatusOr<RandomAccessFile> RandomAccessFile::Open(const std::string& path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return ErrnoError(errno, path, "open for reading");
  struct stat st;
  if (::fstat(fd, &st) != 0) {
    const int err = errno;
    CloseQuietly(fd);
    return ErrnoError(err, path, "stat");
  }
  if (!S_ISREG(st.st_mode)) {
    CloseQuietly(fd);
    return absl::FailedPreconditionError(absl::StrCat(path, ": not a regular file"));
  }
  return RandomAccessFile(path, fd, static_cast<uint64_t>(st.st_size));
}

RandomAccessFile::RandomAccessFile(RandomAccessFile&& other) noexcept
    : path_(std::move(other.path_)), fd_(std::exchange(other.fd_, -1)), size_(other.size_) {}

RandomAccessFile& RandomAccessFile::operator=(RandomAccessFile&& other) noexcept {
  if (this != &other) {
    CloseQuietly(fd_);
    path_ = std::move(other.path_);
    fd_ = std::exchange(other.fd_, -1);
    size_ = other.size_;
  }
  return *this;
}

RandomAccessFile::~RandomAccessFile() { CloseQuietly(fd_); }

absl::Status RandomAccessFile::ReadAt(uint64_t offset, void* dst, size_t n) const {
  char* p = static_cast<char*>(dst);
  size_t done = 0;
  while (done < n) {
    const ssize_t r =
        ::pread(fd_, p + done, std::min(n - done, kMaxIoBytes), static_cast<off_t>(offset + done));
    if (r < 0) {
      if (errno == EINTR) continue;
      return ErrnoError(errno, path_, absl::StrCat("read ", n, " bytes at offset ", offset));
    }
    if (r == 0) {
      return absl::DataLossError(absl::StrCat(path_, ": unexpected end of file reading ", n,
                                              " bytes at offset ", offset, " (got ", done, ")"));
    }
    done += static_cast<size_t>(r);
  }
  return absl::OkStatus();
}

absl::Status FsyncDirectory(const std::string& path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) return ErrnoError(errno, path, "open directory for fsync");
  // Some filesystems cannot sync a directory and say EINVAL; there is nothing more to do there.
  if (::fsync(fd) != 0 && errno != EINVAL) {
    const int err = errno;
    CloseQuietly(fd);
    return ErrnoError(err, path, "fsync directory");
  }
  CloseQuietly(fd);
  return absl::OkStatus();
}

absl::Status MakeDirectories(const std::string& path, int mode) {
  if (path.empty()) return absl::InvalidArgumentError("MakeDirectories: empty path");
  size_t end = 0;
  while (end != std::string::npos) {
    end = path.find('/', end + 1);
    const std::string prefix = path.substr(0, end);
    if (prefix.empty() || prefix.back() == '/') continue;  // leading or repeated '/'
    struct stat st;
    if (::stat(prefix.c_str(), &st) == 0) {
      if (!S_ISDIR(st.st_mode)) {
        return absl::FailedPreconditionError(absl::StrCat(
            path, ": cannot create directory: ", prefix, " exists and is not a directory"));
      }
      continue;
    }
    if (::mkdir(prefix.c_str(), static_cast<mode_t>(mode)) != 0) {
      // Another process may have created it since the stat.
      if (errno == EEXIST && ::stat(prefix.c_str(), &st) == 0 && S_ISDIR(st.st_mode)) continue;
      return ErrnoError(errno, path, absl::StrCat("mkdir ", prefix));
    }
    LOOM_RETURN_IF_ERROR(FsyncDirectory(DirName(prefix)));
  }
  return absl::OkStatus();
}

absl::StatusOr<std::vector<std::string>> ListDirectory(const std::string& path) {
  DIR* dir = ::opendir(path.c_str());
  if (dir == nullptr) return ErrnoError(errno, path, "open directory");
  std::vector<std::string> names;
  while (true) {
    errno = 0;
    const struct dirent* entry = ::readdir(dir);
    if (entry == nullptr) {
      const int err = errno;
      ::closedir(dir);
      if (err != 0) return ErrnoError(err, path, "read directory");
      break;
    }
    const absl::string_view name = entry->d_name;
    if (name == "." || name == "..") continue;
    names.emplace_back(name);
  }
  std::sort(names.begin(), names.end());
  return names;
}

absl::Status RemoveAll(const std::string& path) {
  std::error_code ec;
  std::filesystem::remove_all(path, ec);
  if (ec) return ErrnoError(ec.value(), path, "remove recursively");
  return absl::OkStatus();
}

}  // namespace loom::runtime::io
