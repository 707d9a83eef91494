#include "comm/shm/shm_backend.h"

#include <sys/resource.h>
#include <unistd.h>

#include <algorithm>
#include <optional>
#include <type_traits>
#include <vector>

#include "absl/strings/str_cat.h"
#include "comm/exchange.h"
#include "comm/mpi/mpi_env.h"
#include "comm/mpi/mpi_util.h"
#include "comm/shm/algorithms.h"
#include "comm/shm/shm_group.h"
#include "runtime/base/env.h"
#include "runtime/base/logging.h"
#include "runtime/base/status_macros.h"

namespace loom::comm {
namespace {

using mpi_detail::LockMpi;
using mpi_detail::MpiStatus;

// Broadcast and all-to-all read other ranks' buffers in the arena from this many bytes (their
// registered paths replace two copies per block by one; below, the extra closing step costs more).
// LOOM_SHM_REGISTERED_BYTES lowers it too (tests set 0 to take every path at every size).
constexpr int64_t kSingleCopyMinBytes = 1024;

ShmGroup::Config GroupConfig(const ShmOptions& o) {
  ShmGroup::Config c;
  c.ring_bytes = o.ring_bytes;
  c.chunk_bytes = o.chunk_bytes;
  c.stream_min_bytes = o.stream_min_bytes;
  c.shared_stores = o.shared_stores == "plain"    ? ShmGroup::Config::kPlain
                    : o.shared_stores == "stream" ? ShmGroup::Config::kStream
                                                  : ShmGroup::Config::kAuto;
  return c;
}

absl::StatusOr<std::unique_ptr<Backend>> MakeShmBackend(MPI_Comm comm, const ShmOptions& options);

class ShmBackend : public Backend {
 public:
  ShmBackend(MPI_Comm comm, std::unique_ptr<ShmGroup> group, std::unique_ptr<ShmArena> arena,
             ShmOptions options)
      : comm_(comm),
        group_(std::move(group)),
        arena_(std::move(arena)),
        options_(options),
        mailbox_(std::make_unique<mpi_detail::MpiMailbox>(comm)) {}

  ~ShmBackend() override {
    mailbox_.reset();
    arena_.reset();
    group_.reset();
    if (mpi_detail::MpiFinalized()) return;
    std::unique_lock<std::mutex> lock = LockMpi();
    MPI_Comm_free(&comm_);
  }

  int rank() const override { return group_->rank(); }
  int size() const override { return group_->size(); }
  std::string name() const override { return "shm"; }

  absl::Status Run(const CollectiveArgs& args, Deadline deadline) override {
    if (args.fp.op == CollectiveOp::kSend) return mailbox_->Send(args);
    if (args.fp.op == CollectiveOp::kRecv) {
      return mailbox_->Recv(args, deadline, group_->oversubscribed());
    }
    ShmProgress progress;
    progress.seq = args.seq;
    if (pending_.has_value() && pending_->seq == args.seq) progress = *pending_;
    pending_.reset();
    ShmWait wait{deadline, std::nullopt};
    return Dispatch(args, progress, wait);
  }

  std::optional<absl::Status> TryRunNow(const CollectiveArgs& args, Deadline deadline,
                                        std::chrono::nanoseconds patience) override {
    const CollectiveOp op = args.fp.op;
    if (op == CollectiveOp::kSend || op == CollectiveOp::kRecv ||
        (op == CollectiveOp::kAllToAllV && arena_ == nullptr)) {
      return std::nullopt;  // not resumable: the progress thread runs them
    }
    ShmProgress progress;
    progress.seq = args.seq;
    ShmWait wait{deadline, std::chrono::steady_clock::now() + patience};
    absl::Status s = Dispatch(args, progress, wait);
    if (wait.suspended) {
      pending_ = progress;
      return std::nullopt;
    }
    return s;
  }

  absl::StatusOr<std::unique_ptr<Backend>> Split(int color, int key, Deadline deadline) override {
    // (color, key) travel through shared memory, bounded by the deadline; once every rank is known
    // to be here, the blocking MPI calls below cannot hang on a missing one.
    absl::StatusOr<SplitPlan> planned =
        ExchangeSplitPlan(color, key, rank(), size(), [&](const CollectiveArgs& gather) {
          ShmProgress progress;
          ShmWait wait{deadline, std::nullopt};
          return AllGatherDirect(*group_, gather, progress, wait);
        });
    if (!planned.ok()) return planned.status();
    const SplitPlan& plan = *planned;
    absl::StatusOr<MPI_Comm> split = mpi_detail::SplitMpiComm(comm_, plan);
    if (!split.ok()) return split.status();
    return MakeShmBackend(*split, options_);
  }

  runtime::Allocator* shared_allocator() override { return arena_.get(); }

  [[noreturn]] void Abort(int exit_code) override {
    LOOM_LOG(ERROR) << "aborting the job: MPI_Abort(MPI_COMM_WORLD, " << exit_code << ")";
    MPI_Abort(MPI_COMM_WORLD, exit_code);
    std::abort();
  }

 private:
  absl::Status Dispatch(const CollectiveArgs& a, ShmProgress& p, ShmWait& w) {
    ShmGroup& g = *group_;
    // Per-rank bytes (a block for the block-wise ops), and whether reading peers' arena buffers
    // (broadcast, all-to-all) pays at this size.
    const int64_t bytes = a.fp.count * static_cast<int64_t>(runtime::DTypeSize(a.fp.dtype));
    const bool single_copy =
        arena_ != nullptr &&
        (a.fp.op == CollectiveOp::kAllToAll ? bytes * g.size() : bytes) >=
            std::min<int64_t>(options_.registered_min_bytes, kSingleCopyMinBytes);
    switch (a.fp.op) {
      case CollectiveOp::kAllReduce: {
        if (bytes * g.size() <= options_.one_shot_max_bytes && bytes <= g.MaxStepBytes()) {
          return AllReduceOneShot(g, arena_.get(), a, p, w);
        }
        if (arena_ != nullptr && bytes >= options_.registered_min_bytes) {
          return AllReduceRegistered(g, *arena_, a, p, w);
        }
        return AllReduceTwoPhase(g, a, p, w);
      }
      case CollectiveOp::kReduceScatter:
        return ReduceScatterDirect(g, a, p, w);
      case CollectiveOp::kAllGather:
        // Worth the extra inline step only for outputs of some size.
        if (arena_ != nullptr && bytes * g.size() >= options_.registered_min_bytes) {
          return AllGatherRegistered(g, *arena_, a, p, w);
        }
        return AllGatherDirect(g, a, p, w);
      case CollectiveOp::kAllToAll:
        if (single_copy) return AllToAllRegistered(g, *arena_, a, p, w);
        return AllToAllDirect(g, a, p, w);
      case CollectiveOp::kBroadcast:
        if (single_copy) return BroadcastRegistered(g, *arena_, a, p, w);
        return BroadcastFromRoot(g, a, p, w);
      case CollectiveOp::kBarrier:
        return BarrierFlags(g, p, w);
      case CollectiveOp::kAllToAllV:
        if (arena_ != nullptr) return AllToAllVRegistered(g, *arena_, a, p, w);
        return ExchangeStaged(g, a, w);
      default:
        return absl::InternalError(absl::StrCat("shm backend cannot run ", a.fp.ToString()));
    }
  }

  MPI_Comm comm_;
  std::unique_ptr<ShmGroup> group_;
  std::unique_ptr<ShmArena> arena_;  // nullptr: none asked for, one rank, or could not map
  ShmOptions options_;
  std::unique_ptr<mpi_detail::MpiMailbox> mailbox_;
  std::optional<ShmProgress> pending_;
};

// `bytes` per rank, within a quarter of the process's address-space limit (ulimit -v) when there
// is one: every rank maps every rank's region.
int64_t ArenaBytesWithin(int64_t bytes, int size) {
  struct rlimit limit;
  if (bytes <= 0 || getrlimit(RLIMIT_AS, &limit) != 0 || limit.rlim_cur == RLIM_INFINITY) {
    return std::max<int64_t>(bytes, 0);
  }
  return std::min<int64_t>(bytes, static_cast<int64_t>(limit.rlim_cur / 4 / size));
}

// The backend over `comm` (whose ranks share a host): its ring group and, when asked for, its
// arena. Takes ownership of `comm`, freeing it on failure. Collective.
absl::StatusOr<std::unique_ptr<Backend>> MakeShmBackend(MPI_Comm comm, const ShmOptions& options) {
  absl::StatusOr<std::unique_ptr<ShmGroup>> group = ShmGroup::Create(comm, GroupConfig(options));
  absl::StatusOr<std::unique_ptr<ShmArena>> arena = std::unique_ptr<ShmArena>();
  int size = 1;
  {
    std::unique_lock<std::mutex> lock = LockMpi();
    MPI_Comm_size(comm, &size);
  }
  // A group of one rank has nobody to share with: no arena. Creating one is collective, and the
  // algorithm choices must match on every rank, so all ranks take the smallest arena size and
  // thresholds asked for (an arena size of 0 on any rank: none anywhere).
  ShmOptions agreed = options;
  int64_t arena_bytes = 0;
  if (group.ok() && size > 1) {
    int64_t values[3] = {ArenaBytesWithin(options.arena_bytes, size), options.one_shot_max_bytes,
                         options.registered_min_bytes};
    std::unique_lock<std::mutex> lock = LockMpi();
    absl::Status s = MpiStatus(MPI_Allreduce(MPI_IN_PLACE, values, 3, MPI_INT64_T, MPI_MIN, comm),
                               "MPI_Allreduce");
    if (!s.ok()) {
      MPI_Comm_free(&comm);
      return s;
    }
    arena_bytes = values[0];
    agreed.one_shot_max_bytes = values[1];
    agreed.registered_min_bytes = values[2];
  }
  if (arena_bytes > 0) {
    arena = ShmArena::Create(comm, arena_bytes);
    // Every rank gets the same answer (ShmSegment::Create), so all go on without one alike.
    if (!arena.ok()) {
      LOOM_LOG(WARNING) << "no shared arena for this communicator (" << arena.status().message()
                        << "); its collectives take the staged paths";
      arena = std::unique_ptr<ShmArena>();
    }
  }
  if (!group.ok()) {
    std::unique_lock<std::mutex> lock = LockMpi();
    MPI_Comm_free(&comm);
    return group.status();
  }
  return std::unique_ptr<Backend>(
      new ShmBackend(comm, std::move(group).value(), std::move(arena).value(), agreed));
}

}  // namespace

int64_t ShmOptions::DefaultArenaBytes() {
  // Address space only, but every rank maps every rank's region of every communicator's arena:
  // the cap keeps a mesh of many communicators on a large host well inside the 128 TiB of a
  // process's address space.
  constexpr int64_t kCap = int64_t{64} << 30;
  const long pages = sysconf(_SC_PHYS_PAGES), page = sysconf(_SC_PAGESIZE);
  return pages > 0 && page > 0 ? std::min(kCap, static_cast<int64_t>(pages) * page)
                               : int64_t{1} << 30;
}

ShmOptions ShmOptions::FromEnv() {
  ShmOptions o;
  // Reads a positive size from `name` into `value` (warning and keeping the default otherwise).
  auto read = [](const char* name, int64_t minimum, auto* value) {
    const absl::StatusOr<int64_t> v = base::GetEnvInt(name, static_cast<int64_t>(*value));
    if (v.ok() && *v >= minimum) {
      *value = static_cast<std::remove_pointer_t<decltype(value)>>(*v);
    } else {
      LOOM_LOG(WARNING) << name << " must be an integer >= " << minimum << "; using " << *value;
    }
  };
  read("LOOM_SHM_RING_BYTES", 16384, &o.ring_bytes);
  read("LOOM_SHM_CHUNK_BYTES", 64, &o.chunk_bytes);
  read("LOOM_SHM_ONE_SHOT_BYTES", 0, &o.one_shot_max_bytes);
  read("LOOM_SHM_STREAM_BYTES", 0, &o.stream_min_bytes);
  read("LOOM_SHM_ARENA_BYTES", 0, &o.arena_bytes);
  read("LOOM_SHM_REGISTERED_BYTES", 0, &o.registered_min_bytes);
  const std::string stores = base::GetEnv("LOOM_SHM_SHARED_STORES").value_or(o.shared_stores);
  if (stores == "auto" || stores == "plain" || stores == "stream") {
    o.shared_stores = stores;
  } else {
    LOOM_LOG(WARNING) << "LOOM_SHM_SHARED_STORES must be auto, plain or stream, not \"" << stores
                      << "\"; using auto";
  }
  return o;
}

absl::StatusOr<std::unique_ptr<Backend>> MakeShmWorldBackend(ShmOptions options) {
  absl::StatusOr<MpiEnvironment*> env = MpiEnvironment::Init();
  if (!env.ok()) return env.status();
  MPI_Comm world = MPI_COMM_NULL;
  int local_size = 0, world_size = 0, all_local = 0;
  {
    std::unique_lock<std::mutex> lock = LockMpi();
    absl::Status s = MpiStatus(MPI_Comm_dup(MPI_COMM_WORLD, &world), "MPI_Comm_dup");
    if (!s.ok()) return s;
    MPI_Comm node = MPI_COMM_NULL;
    MPI_Comm_split_type(world, MPI_COMM_TYPE_SHARED, 0, MPI_INFO_NULL, &node);
    MPI_Comm_size(node, &local_size);
    MPI_Comm_free(&node);
    MPI_Comm_size(world, &world_size);
    int mine = local_size == world_size ? 1 : 0;
    MPI_Allreduce(&mine, &all_local, 1, MPI_INT, MPI_MIN, world);
  }
  if (!all_local) {
    std::unique_lock<std::mutex> lock = LockMpi();
    MPI_Comm_free(&world);
    return absl::FailedPreconditionError(absl::StrCat(
        "the shm backend needs every rank on one host, but this rank shares its host with ",
        local_size, " of ", world_size, " ranks; use the mpi backend across hosts"));
  }
  return MakeShmBackend(world, options);
}

absl::StatusOr<std::unique_ptr<Backend>> MakeShmSplitBackend(int color, ShmOptions options) {
  absl::StatusOr<MpiEnvironment*> env = MpiEnvironment::Init();
  if (!env.ok()) return env.status();
  MPI_Comm comm = MPI_COMM_NULL;
  {
    std::unique_lock<std::mutex> lock = LockMpi();
    int rank = 0;
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    LOOM_RETURN_IF_ERROR(
        MpiStatus(MPI_Comm_split(MPI_COMM_WORLD, color, rank, &comm), "MPI_Comm_split"));
  }
  return MakeShmBackend(comm, options);
}

}  // namespace loom::comm
