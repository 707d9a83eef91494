// MpiEnvironment: MPI's process-wide state as loom needs it — initialised once with thread
// support for the communicators' progress threads, finalized at exit, and the process rank set
// for log prefixes. MPI headers stay out of this header.
//
//   int main(int argc, char** argv) {
//     absl::StatusOr<MpiEnvironment*> mpi = MpiEnvironment::Init(&argc, &argv);
//     if (!mpi.ok()) { std::cerr << mpi.status() << "\n"; return 1; }
//     LOOM_LOG(INFO) << "rank " << (*mpi)->world_rank() << " of " << (*mpi)->world_size();
//   }
#pragma once

#include <mutex>
#include <string>

#include "absl/status/statusor.h"

namespace loom::comm {

class MpiEnvironment {
 public:
  // Initialises MPI (MPI_Init_thread asking for MPI_THREAD_MULTIPLE) on the first call and
  // returns the process-wide environment; later calls return the same one. If the program
  // initialised MPI itself, loom adopts it (and leaves finalizing to the program). Fails with
  // FailedPrecondition if MPI provides less than MPI_THREAD_SERIALIZED: every communicator makes
  // its MPI calls from its own progress thread. MPI is finalized at process exit (atexit) when
  // loom initialised it; communicators must be destroyed before then.
  // `argc`/`argv` may be null. Thread-safe.
  static absl::StatusOr<MpiEnvironment*> Init(int* argc = nullptr, char*** argv = nullptr);

  int world_rank() const { return world_rank_; }
  int world_size() const { return world_size_; }
  // True with MPI_THREAD_MULTIPLE; with MPI_THREAD_SERIALIZED loom serialises its own MPI calls
  // through Lock() (the program must then not call MPI while a loom call is in flight).
  bool thread_multiple() const { return thread_multiple_; }
  // "Open MPI v4.1.4, ..." (MPI_Get_library_version, first line).
  const std::string& library_version() const { return library_version_; }

  // Held around each MPI call loom makes: the process-wide MPI lock under MPI_THREAD_SERIALIZED,
  // an uncontended per-thread mutex under MPI_THREAD_MULTIPLE. Never nest it.
  std::unique_lock<std::mutex> Lock();

 private:
  MpiEnvironment() = default;

  int world_rank_ = 0;
  int world_size_ = 1;
  bool thread_multiple_ = false;
  bool owns_mpi_ = false;
  std::string library_version_;
  std::mutex mu_;
};

}  // namespace loom::comm
