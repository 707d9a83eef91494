// Whole-file reads and crash-safe writes: a file written here is either the old contents or the
// complete new contents after a crash or power loss, never a torn mix.
//
//   LOOM_RETURN_IF_ERROR(MakeDirectories("/ckpt/run1"));
//   LOOM_RETURN_IF_ERROR(WriteFileAtomic("/ckpt/run1/config.json", json_text));
//   LOOM_ASSIGN_OR_RETURN(std::string text, ReadFile("/ckpt/run1/config.json"));
//   LOOM_ASSIGN_OR_RETURN(AtomicFileWriter w, AtomicFileWriter::Open("/ckpt/run1/big.bin"));
//   LOOM_RETURN_IF_ERROR(w.Append(chunk));   // ... as many times as needed
//   LOOM_RETURN_IF_ERROR(w.Commit());
//
// POSIX only (Linux). Every error is an absl::Status whose code follows errno (NotFound,
// PermissionDenied, ResourceExhausted for a full disk, ...) and whose message names the path, the
// operation and the system's error text: "/ckpt/x.bin: open for reading: No such file or
// directory". Nothing here aborts on a bad path or file.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace loom::runtime::io {

// The whole contents of the file at `path`.
absl::StatusOr<std::string> ReadFile(const std::string& path);

// Replaces (or creates) `path` with exactly `bytes`, durably: writes "<path>.tmp.<pid>.<seq>" in
// the same directory, fsyncs it, renames it over `path` and fsyncs the directory. On failure the
// temporary file is removed and `path` is untouched. The directory must exist. `mode` (before the
// umask): the new file's permissions; checkpoints use kOwnerOnly.
inline constexpr int kOwnerOnly = 0600;
absl::Status WriteFileAtomic(const std::string& path, absl::string_view bytes, int mode = 0644);

// WriteFileAtomic for contents produced piece by piece (a large tensor need not be copied into one
// string). Nothing is visible at `path` until Commit succeeds; a writer destroyed without a
// successful Commit removes its temporary file. Move-only; not thread-safe.
class AtomicFileWriter {
 public:
  // Creates the temporary file next to `path`; the directory must exist.
  static absl::StatusOr<AtomicFileWriter> Open(const std::string& path, int mode = 0644);

  AtomicFileWriter(AtomicFileWriter&& other) noexcept;
  AtomicFileWriter& operator=(AtomicFileWriter&& other) noexcept;
  AtomicFileWriter(const AtomicFileWriter&) = delete;
  AtomicFileWriter& operator=(const AtomicFileWriter&) = delete;
  ~AtomicFileWriter();

  // Appends host bytes. After a failure the writer is broken: later calls return the same error.
  absl::Status Append(absl::string_view bytes);
  absl::Status Append(const void* data, size_t n);
  // fsync, close, rename over path(), fsync the directory. After a failed Append it returns that
  // error; called twice, FailedPrecondition. The writer is finished afterwards whatever the result.
  absl::Status Commit();

  const std::string& path() const { return path_; }
  uint64_t bytes_written() const { return bytes_written_; }

 private:
  AtomicFileWriter(std::string path, std::string temp_path, int fd);
  void Discard();  // closes and removes the temporary file, if any

  std::string path_;
  std::string temp_path_;
  int fd_ = -1;
  uint64_t bytes_written_ = 0;
  absl::Status status_;  // first error, sticky
  bool finished_ = false;
};

// A file opened for positioned reads (pread), e.g. one tensor of a large safetensors file at a
// time. Move-only; ReadAt is thread-safe.
class RandomAccessFile {
 public:
  static absl::StatusOr<RandomAccessFile> Open(const std::string& path);

  RandomAccessFile(RandomAccessFile&& other) noexcept;
  RandomAccessFile& operator=(RandomAccessFile&& other) noexcept;
  RandomAccessFile(const RandomAccessFile&) = delete;
  RandomAccessFile& operator=(const RandomAccessFile&) = delete;
  ~RandomAccessFile();

  // Size in bytes when the file was opened.
  uint64_t size() const { return size_; }
  const std::string& path() const { return path_; }
  // Reads exactly `n` bytes at `offset` into host memory `dst`. DataLoss if the file ends first.
  absl::Status ReadAt(uint64_t offset, void* dst, size_t n) const;

 private:
  RandomAccessFile(std::string path, int fd, uint64_t size);

  std::string path_;
  int fd_ = -1;
  uint64_t size_ = 0;
};

// fsyncs the directory itself, making renames and creations inside it durable.
absl::Status FsyncDirectory(const std::string& path);

// `mkdir -p`: creates `path` and any missing parents (`mode` before umask), fsyncing the parent of
// each directory it creates. OK if `path` already is a directory (its mode is left as it is);
// FailedPrecondition if it or a parent exists and is not a directory.
absl::Status MakeDirectories(const std::string& path, int mode = 0755);

// Names of the entries in directory `path` (without "." and ".."), sorted bytewise.
absl::StatusOr<std::vector<std::string>> ListDirectory(const std::string& path);

// `rm -rf`: removes `path` and everything below it. OK if `path` does not exist.
absl::Status RemoveAll(const std::string& path);

}  // namespace loom::runtime::io
