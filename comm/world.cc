#include "comm/world.h"

#include "absl/strings/str_cat.h"
#include "comm/mpi/mpi_backend.h"
#include "comm/shm/shm_backend.h"

namespace loom::comm {

absl::StatusOr<std::unique_ptr<Communicator>> MakeWorldCommunicator(absl::string_view backend,
                                                                    CommOptions options) {
  absl::StatusOr<std::unique_ptr<Backend>> b;
  if (backend == "mpi") {
    b = MakeMpiWorldBackend();
  } else if (backend == "shm") {
    b = MakeShmWorldBackend(ShmOptions::FromEnv());
  } else {
    return absl::InvalidArgumentError(absl::StrCat(
        "unknown communicator backend \"", backend,
        "\"; choose \"mpi\" (MPI's collectives, any hosts) or \"shm\" (loom's shared-memory "
        "algorithms, one host)"));
  }
  if (!b.ok()) return b.status();
  return std::make_unique<Communicator>(std::move(b).value(), options);
}

}  // namespace loom::comm
