#include "comm/world.h"

#include "absl/strings/str_cat.h"
#include "comm/mpi/mpi_backend.h"
#include "comm/mpi/mpi_p2p.h"
#include "comm/p2p_backend.h"
#include "comm/shm/shm_backend.h"
#include "runtime/base/env.h"

namespace loom::comm {

absl::StatusOr<std::unique_ptr<Communicator>> MakeWorldCommunicator(absl::string_view backend,
                                                                    CommOptions options) {
  absl::StatusOr<std::unique_ptr<Backend>> b;
  if (backend == "mpi") {
    b = MakeMpiWorldBackend();
  } else if (backend == "shm") {
    b = MakeShmWorldBackend(ShmOptions::FromEnv());
  } else if (backend == "ring") {
    absl::StatusOr<std::unique_ptr<PointToPoint>> p2p = MakeMpiPointToPoint();
    if (!p2p.ok()) return p2p.status();
    b = MakeP2PBackend(std::move(p2p).value(), P2POptions{});
  } else {
    return absl::InvalidArgumentError(absl::StrCat(
        "unknown communicator backend \"", backend,
        "\"; choose \"mpi\" (MPI's collectives, any hosts), \"shm\" (loom's shared-memory "
        "algorithms, one host) or \"ring\" (loom's ring / halving-doubling algorithms over MPI "
        "point-to-point, any hosts)"));
  }
  if (!b.ok()) return b.status();
  return std::make_unique<Communicator>(std::move(b).value(), options);
}

int LaunchedWorldSize() {
  for (const char* name : {"OMPI_COMM_WORLD_SIZE", "PMI_SIZE"}) {
    const int64_t size = base::GetEnvInt(name, 0).value_or(0);
    if (size > 0) return static_cast<int>(size);
  }
  return 1;
}

}  // namespace loom::comm
