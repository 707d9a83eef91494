// The `shm` backend: ranks of one host exchange through POSIX shared memory with loom's own
// algorithms (comm/shm/algorithms.h): one-shot all-reduce below a threshold, reduce-scatter +
// all-gather above it, direct reduce-scatter / all-gather / all-to-all / broadcast, per-rank slot
// rings (at least double-buffered) with per-step flags (acquire/release atomics) instead of
// barriers, large messages in chunks (comm/shm/shm_group.h). MPI only bootstraps (ranks, the
// segment's name, one barrier at creation) and carries Send/Recv (buffered MPI_Isend / MPI_Improbe
// + MPI_Mrecv, like the mpi backend).
//
//   absl::StatusOr<std::unique_ptr<Backend>> b = MakeShmWorldBackend(ShmOptions::FromEnv());
//   Communicator world(std::move(b).value(), CommOptions::FromEnv());
//   world.AllReduce(grad, grad, ReduceOp::kSum)->Wait();
//   // or simply: MakeWorldCommunicator("shm", CommOptions::FromEnv())   (comm/world.h)
//
// Buffers are host memory, owned by the caller until the Work completes; every rank calls the
// collectives in the same order. Reductions combine ranks in rank order with f32 accumulation for
// 16-bit types, each element reduced by one rank or identically by all, so every rank gets
// bitwise identical results (equal to the local backend's). Waits spin ~20 µs, then yield, then
// sleep, bounded by the deadline; a timeout names the ranks whose flags are behind. Split makes
// a new segment among the group's members. Segments are unlinked once mapped: nothing leaks.
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "comm/backend.h"

namespace loom::comm {

struct ShmOptions {
  // Each rank's slot ring (and the shared result ring). A step of a call reserves the next part;
  // large messages run in chunks of a quarter of it. Env LOOM_SHM_RING_BYTES.
  int64_t ring_bytes = 2 << 20;
  // The largest step (chunk) of a large message, at most a quarter of the ring. Env
  // LOOM_SHM_CHUNK_BYTES.
  int64_t chunk_bytes = 512 << 10;
  // All-reduces whose inputs on all ranks together have at most this many bytes use the one-shot
  // algorithm (every rank reads every input, so the budget is on the total: 32 KiB per rank at 2
  // ranks, 8 KiB at 8). Env LOOM_SHM_ONE_SHOT_BYTES.
  int64_t one_shot_max_bytes = 64 << 10;
  // Calls whose output has at least this many bytes write it with non-temporal stores (beyond
  // the last-level cache they only evict what the next chunks need). Env LOOM_SHM_STREAM_BYTES.
  int64_t stream_min_bytes = 8 << 20;
  // How stores into the shared slots and result ring are made: "auto" measures plain against
  // non-temporal stores and keeps the faster (comm/shm/shm_group.h), or "plain" / "stream".
  // Env LOOM_SHM_SHARED_STORES.
  std::string shared_stores = "auto";
  // Bytes per rank of the communicator's shared arena (Communicator::shared_allocator(); 0: none).
  // Only address space is reserved up front; memory is committed as tensors are allocated from
  // it. The default is the host's physical memory (no rank can use more), at most 64 GiB. When
  // the arena cannot be mapped the communicator goes on without one (a warning). Env
  // LOOM_SHM_ARENA_BYTES.
  int64_t arena_bytes = DefaultArenaBytes();
  // All-gathers and all-reduces (above the one-shot size) whose output has at least this many
  // bytes, on buffers in the arena, write straight into the peers' outputs; broadcasts and
  // all-to-alls read the peers' buffers from 1 KiB, or from this size if smaller (so only lowering
  // works for them; LOOM_SHM_ARENA_BYTES=0 turns every such path off). Env
  // LOOM_SHM_REGISTERED_BYTES. The ranks of a communicator use the smallest value any asks for
  // (and the smallest one-shot size).
  int64_t registered_min_bytes = 64 << 10;

  static ShmOptions FromEnv();
  static int64_t DefaultArenaBytes();
};

// Initialises MPI if needed and returns the backend of all MPI_COMM_WORLD ranks, which must share
// this host (FailedPrecondition otherwise: use the mpi backend). Collective.
absl::StatusOr<std::unique_ptr<Backend>> MakeShmWorldBackend(ShmOptions options = {});

// The backend of the MPI_COMM_WORLD ranks that pass the same `color` (ordered by world rank), which
// must share this host. Collective over every world rank (MPI_Comm_split). The hierarchical
// backend's intra-host stage.
absl::StatusOr<std::unique_ptr<Backend>> MakeShmSplitBackend(int color, ShmOptions options = {});

}  // namespace loom::comm
