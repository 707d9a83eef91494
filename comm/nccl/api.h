// The calls the NCCL backend (comm/nccl/nccl_backend.h) makes into NCCL and the CUDA runtime,
// behind an interface: on a GPU the real ones (comm/nccl/nccl_api.cc, built with the CUDA
// backend), on the CPU a fake over loom's thread-rank communicator (tests/comm/fake_nccl.h), so
// the backend's own logic (which call each collective becomes, the offsets of AllToAllV's grouped
// sends and receives, the non-blocking initialisation, the watchdog's polling, aborts and
// deadlines, unique-id exchange, splits) is tested in every build.
//
// Handles are opaque: Comm is an ncclComm_t, Stream a cudaStream_t (nullptr: the default stream,
// where loom's CUDA kernels run), Event a cudaEvent_t. Every call that queues device work returns
// at once; completion is observed by recording an event and querying it.
#pragma once

#include <cstddef>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "comm/types.h"
#include "runtime/allocator.h"

namespace loom::comm::nccl {

using runtime::DType;

// ncclUniqueId: made by one rank, given to every rank of the group by the bootstrap communicator.
struct UniqueId {
  static constexpr int kBytes = 128;
  char bytes[kBytes] = {};
};

class Api {
 public:
  using Comm = void*;
  using Stream = void*;
  using Event = void*;

  virtual ~Api() = default;
  virtual std::string Version() const = 0;  // "NCCL 2.28.3"
  // Where the backend's buffers live and what it stages host tensors through.
  virtual runtime::Allocator& DeviceAllocator() = 0;
  // The current GPU's identity ("host:PCI bus id"): two ranks with the same one share a GPU.
  virtual absl::StatusOr<std::string> DeviceId() = 0;

  virtual absl::StatusOr<UniqueId> GetUniqueId() = 0;
  // Non-blocking: returns the communicator at once; Ready() says when it can be used.
  virtual absl::StatusOr<Comm> InitRank(int nranks, const UniqueId& id, int rank) = 0;
  // Collective over `comm`'s ranks, non-blocking like InitRank: the communicator of the ranks
  // with the same color, ordered by (key, rank).
  virtual absl::StatusOr<Comm> Split(Comm comm, int color, int key) = 0;
  // true: ready (its last operations may still run); false: initialisation still in progress;
  // an error: the communicator failed (ncclCommGetAsyncError), with NCCL's message.
  virtual absl::StatusOr<bool> Ready(Comm comm) = 0;
  // Stops whatever the communicator runs and frees it (ncclCommAbort); it must not be used again.
  virtual void Abort(Comm comm) = 0;
  // Frees a communicator whose operations have completed (ncclCommDestroy).
  virtual void Destroy(Comm comm) = 0;

  // Queued on `stream`; counts are elements of `dtype`.
  virtual absl::Status AllReduce(const void* in, void* out, size_t count, DType dtype, ReduceOp op,
                                 Comm comm, Stream stream) = 0;
  virtual absl::Status ReduceScatter(const void* in, void* out, size_t recv_count, DType dtype,
                                     ReduceOp op, Comm comm, Stream stream) = 0;
  virtual absl::Status AllGather(const void* in, void* out, size_t send_count, DType dtype,
                                 Comm comm, Stream stream) = 0;
  virtual absl::Status Broadcast(const void* in, void* out, size_t count, DType dtype, int root,
                                 Comm comm, Stream stream) = 0;
  virtual absl::Status Send(const void* buffer, size_t count, DType dtype, int peer, Comm comm,
                            Stream stream) = 0;
  virtual absl::Status Recv(void* buffer, size_t count, DType dtype, int peer, Comm comm,
                            Stream stream) = 0;
  // Sends and receives between GroupStart and GroupEnd progress together (no ordering deadlock).
  virtual absl::Status GroupStart() = 0;
  virtual absl::Status GroupEnd() = 0;

  virtual absl::StatusOr<Stream> CreateStream() = 0;  // non-blocking w.r.t. the default stream
  virtual void DestroyStream(Stream stream) = 0;
  virtual absl::StatusOr<Event> CreateEvent() = 0;  // without timing
  virtual void DestroyEvent(Event event) = 0;
  // Marks the point after the work queued on `stream` so far.
  virtual absl::Status Record(Event event, Stream stream) = 0;
  // Work queued on `stream` later runs after `event`'s point (no host wait).
  virtual absl::Status StreamWait(Stream stream, Event event) = 0;
  // Whether `event`'s point has been reached.
  virtual absl::StatusOr<bool> Query(Event event) = 0;
};

// The real NCCL and CUDA runtime (one per process), or UnimplementedError in a build without the
// CUDA backend; FailedPrecondition when no GPU is visible.
absl::StatusOr<Api*> NcclApi();

}  // namespace loom::comm::nccl
