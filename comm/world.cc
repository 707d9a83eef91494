#include "comm/world.h"

#include <mutex>
#include <optional>
#include <string>

#include "absl/strings/str_cat.h"
#include "comm/hierarchical.h"
#include "comm/mpi/mpi_backend.h"
#include "comm/mpi/mpi_p2p.h"
#include "comm/mpi/mpi_util.h"
#include "comm/nccl/api.h"
#include "comm/nccl/nccl_backend.h"
#include "comm/p2p_backend.h"
#include "comm/shm/shm_backend.h"
#include "comm/socket/socket_p2p.h"
#include "runtime/base/env.h"
#include "runtime/base/logging.h"
#include "runtime/base/status_macros.h"

namespace loom::comm {

namespace {

// The ring backend composed per host (comm/hierarchical.h). LOOM_HIER_RANKS_PER_HOST=k treats
// every k consecutive ranks as one host, to exercise the composition on one machine.
absl::StatusOr<std::unique_ptr<Backend>> MakeHierarchical(std::unique_ptr<Backend> flat,
                                                          const CommOptions& options) {
  LOOM_ASSIGN_OR_RETURN(int64_t per_host, base::GetEnvInt("LOOM_HIER_RANKS_PER_HOST", 0));
  if (per_host < 0) {
    return absl::InvalidArgumentError("LOOM_HIER_RANKS_PER_HOST must be >= 0 (0: real hosts)");
  }
  LOOM_ASSIGN_OR_RETURN(int host,
                        mpi_detail::MpiHostId(MPI_COMM_WORLD, static_cast<int>(per_host)));
  const Deadline deadline{std::chrono::steady_clock::now() +
                          absl::ToChronoNanoseconds(options.timeout)};
  // Inside a host loom's shared-memory algorithms, across hosts the ring.
  // The hierarchical backend does not hand out shared tensors, so its inner communicators need
  // no arena.
  return MakeHierarchicalBackend(std::move(flat), host, deadline, [](int host_id) {
    ShmOptions inside = ShmOptions::FromEnv();
    inside.arena_bytes = 0;
    return MakeShmSplitBackend(host_id, inside);
  });
}

// Across hosts, MPI's TCP transport moves a two-way exchange at about half the link rate (the
// directions take turns; docs/cluster.md), loom's sockets at 95 %: rank 0 says so once when the
// default transport spans hosts (collective over the world).
absl::Status HintSocketsAcrossHosts() {
  LOOM_ASSIGN_OR_RETURN(const int host, mpi_detail::MpiHostId(MPI_COMM_WORLD, 0));
  int rank = 0, hosts = 0;
  {
    std::unique_lock<std::mutex> lock = mpi_detail::LockMpi();
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    int leader = host == rank ? 1 : 0;  // a host's id is its lowest rank
    MPI_Allreduce(&leader, &hosts, 1, MPI_INT, MPI_SUM, MPI_COMM_WORLD);
  }
  if (hosts > 1 && rank == 0) {
    LOOM_LOG(INFO) << "ring/hier across " << hosts
                   << " hosts over MPI's point-to-point transport; on a TCP network "
                      "LOOM_P2P_TRANSPORT=socket sends both ways at once (about 2x the "
                      "bandwidth on a 1 Gbit/s link, docs/comm.md); keep mpi on RDMA fabrics";
  }
  return absl::OkStatus();
}

// The transport under ring and hier: MPI's point-to-point, or loom's sockets with MPI as their
// control plane (LOOM_P2P_TRANSPORT=mpi|socket, default mpi).
absl::StatusOr<std::unique_ptr<PointToPoint>> MakeWorldTransport(const CommOptions& options) {
  LOOM_ASSIGN_OR_RETURN(std::unique_ptr<PointToPoint> mpi, MakeMpiPointToPoint());
  const std::optional<std::string> chosen = base::GetEnv("LOOM_P2P_TRANSPORT");
  const std::string transport = chosen.value_or("mpi");
  if (transport == "mpi") {
    if (!chosen.has_value()) LOOM_RETURN_IF_ERROR(HintSocketsAcrossHosts());
    return mpi;
  }
  if (transport == "socket") {
    const Deadline deadline{std::chrono::steady_clock::now() +
                            absl::ToChronoNanoseconds(options.timeout)};
    return MakeSocketPointToPoint(std::move(mpi), SocketOptions::FromEnv(), deadline);
  }
  return absl::InvalidArgumentError(absl::StrCat(
      "LOOM_P2P_TRANSPORT must be mpi (MPI's point-to-point) or socket (loom's TCP sockets), got '",
      transport, "'"));
}

// NCCL over every rank, bootstrapped by MPI's collectives (unique id, the one-GPU-per-rank check,
// splits); a fatal error takes the job down with MPI_Abort.
absl::StatusOr<std::unique_ptr<Backend>> MakeNcclWorld(const CommOptions& options) {
  LOOM_ASSIGN_OR_RETURN(nccl::Api * api, nccl::NcclApi());
  LOOM_ASSIGN_OR_RETURN(std::unique_ptr<Backend> mpi, MakeMpiWorldBackend());
  auto bootstrap = std::make_unique<Communicator>(std::move(mpi), options);
  const Deadline deadline{std::chrono::steady_clock::now() +
                          absl::ToChronoNanoseconds(options.timeout)};
  return MakeNcclBackend(api, std::move(bootstrap), deadline, [](int exit_code) {
    LOOM_LOG(ERROR) << "aborting the job: MPI_Abort(MPI_COMM_WORLD, " << exit_code << ")";
    MPI_Abort(MPI_COMM_WORLD, exit_code);
  });
}

}  // namespace

absl::StatusOr<std::unique_ptr<Communicator>> MakeWorldCommunicator(absl::string_view backend,
                                                                    CommOptions options) {
  absl::StatusOr<std::unique_ptr<Backend>> b;
  if (backend == "mpi") {
    b = MakeMpiWorldBackend();
  } else if (backend == "shm") {
    b = MakeShmWorldBackend(ShmOptions::FromEnv());
  } else if (backend == "ring" || backend == "hier") {
    absl::StatusOr<std::unique_ptr<PointToPoint>> p2p = MakeWorldTransport(options);
    if (!p2p.ok()) return p2p.status();
    b = MakeP2PBackend(std::move(p2p).value(), P2POptions{});
    if (b.ok() && backend == "hier") b = MakeHierarchical(std::move(b).value(), options);
  } else if (backend == "nccl") {
    b = MakeNcclWorld(options);
  } else {
    return absl::InvalidArgumentError(absl::StrCat(
        "unknown communicator backend \"", backend,
        "\"; choose \"mpi\" (MPI's collectives, any hosts), \"shm\" (loom's shared-memory "
        "algorithms, one host), \"ring\" (loom's ring / halving-doubling algorithms over MPI "
        "point-to-point, any hosts) or \"hier\" (ring's algorithms composed per host: "
        "reduce-scatter inside, all-reduce across, all-gather inside) or \"nccl\" (NCCL, device "
        "tensors, one GPU per rank)"));
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
