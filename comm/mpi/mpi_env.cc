#include "comm/mpi/mpi_env.h"

#include <mpi.h>

#include <cstdlib>

#include "absl/strings/str_cat.h"
#include "runtime/base/logging.h"

namespace loom::comm {
namespace {

absl::string_view ThreadLevelName(int level) {
  switch (level) {
    case MPI_THREAD_SINGLE:
      return "MPI_THREAD_SINGLE";
    case MPI_THREAD_FUNNELED:
      return "MPI_THREAD_FUNNELED";
    case MPI_THREAD_SERIALIZED:
      return "MPI_THREAD_SERIALIZED";
    case MPI_THREAD_MULTIPLE:
      return "MPI_THREAD_MULTIPLE";
  }
  return "unknown";
}

void FinalizeAtExit() {
  int finalized = 0;
  MPI_Finalized(&finalized);
  if (!finalized) MPI_Finalize();
}

}  // namespace

absl::StatusOr<MpiEnvironment*> MpiEnvironment::Init(int* argc, char*** argv) {
  static std::mutex init_mu;
  static MpiEnvironment* env = nullptr;
  std::lock_guard<std::mutex> lock(init_mu);
  if (env != nullptr) return env;

  int initialized = 0, finalized = 0;
  MPI_Initialized(&initialized);
  MPI_Finalized(&finalized);
  if (finalized) {
    return absl::FailedPreconditionError(
        "MPI was already finalized; create loom's MPI "
        "communicators before MPI_Finalize");
  }
  int provided = MPI_THREAD_SINGLE;
  bool owns = false;
  if (initialized) {
    MPI_Query_thread(&provided);
  } else {
    const int rc = MPI_Init_thread(argc, argv, MPI_THREAD_MULTIPLE, &provided);
    if (rc != MPI_SUCCESS) {
      return absl::UnavailableError(absl::StrCat("MPI_Init_thread failed (error ", rc,
                                                 "); is the program launched with mpirun?"));
    }
    owns = true;
  }
  if (provided < MPI_THREAD_SERIALIZED) {
    return absl::FailedPreconditionError(absl::StrCat(
        "MPI provides ", ThreadLevelName(provided),
        " but loom's communicators call MPI from their progress threads and need at least "
        "MPI_THREAD_SERIALIZED (MPI_THREAD_MULTIPLE preferred); ",
        initialized ? "initialise MPI with MPI_Init_thread(..., MPI_THREAD_MULTIPLE, ...)"
                    : "use an MPI library built with thread support"));
  }
  auto* e = new MpiEnvironment();  // lives until exit: MPI is process-wide
  e->owns_mpi_ = owns;
  e->thread_multiple_ = provided == MPI_THREAD_MULTIPLE;
  MPI_Comm_rank(MPI_COMM_WORLD, &e->world_rank_);
  MPI_Comm_size(MPI_COMM_WORLD, &e->world_size_);
  char version[MPI_MAX_LIBRARY_VERSION_STRING];
  int length = 0;
  MPI_Get_library_version(version, &length);
  e->library_version_.assign(version, static_cast<size_t>(length));
  const size_t newline = e->library_version_.find('\n');
  if (newline != std::string::npos) e->library_version_.resize(newline);
  base::SetProcessRank(e->world_rank_);
  if (!e->thread_multiple_) {
    LOOM_LOG(WARNING) << "MPI provides " << ThreadLevelName(provided)
                      << ", not MPI_THREAD_MULTIPLE: loom serialises its MPI calls";
  }
  if (owns) std::atexit(FinalizeAtExit);
  env = e;
  return env;
}

std::unique_lock<std::mutex> MpiEnvironment::Lock() {
  // Under MPI_THREAD_MULTIPLE nothing needs excluding, but callers may unlock() the lock they
  // got early, so it always owns a mutex: a per-thread one, never contended.
  thread_local std::mutex own;
  return std::unique_lock<std::mutex>(thread_multiple_ ? own : mu_);
}

}  // namespace loom::comm
