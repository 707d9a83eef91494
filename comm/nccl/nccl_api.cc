// nccl::Api over the real NCCL and CUDA runtime (built with the CUDA backend; the host-only build
// has nccl_api_none.cc instead). Communicators are non-blocking (config.blocking = 0), so
// initialisation, splits and calls return at once and NcclBackend polls Ready().
#include <cuda_runtime.h>
#include <nccl.h>
#include <unistd.h>

#include <chrono>
#include <cstring>
#include <thread>

#include "absl/strings/str_cat.h"
#include "comm/nccl/api.h"
#include "runtime/kernels/cuda/device.h"

namespace loom::comm::nccl {

namespace {

absl::Status FromNccl(ncclResult_t r, const char* what, ncclComm_t comm = nullptr) {
  if (r == ncclSuccess || r == ncclInProgress) return absl::OkStatus();
  const char* last = comm != nullptr ? ncclGetLastError(comm) : ncclGetLastError(nullptr);
  return absl::InternalError(
      absl::StrCat(what, ": ", ncclGetErrorString(r), last != nullptr && *last != '\0' ? " (" : "",
                   last != nullptr ? last : "", last != nullptr && *last != '\0' ? ")" : ""));
}

absl::Status FromCuda(cudaError_t e, const char* what) {
  if (e == cudaSuccess) return absl::OkStatus();
  return absl::InternalError(absl::StrCat("CUDA ", what, ": ", cudaGetErrorString(e)));
}

ncclDataType_t NcclType(DType dtype) {
  switch (dtype) {
    case DType::kF32:
      return ncclFloat32;
    case DType::kBF16:
      return ncclBfloat16;
    case DType::kF16:
      return ncclFloat16;
    case DType::kI32:
      return ncclInt32;
    case DType::kI64:
      return ncclInt64;
    default:
      return ncclInt8;  // the communicator admits no other dtype
  }
}

ncclRedOp_t NcclOp(ReduceOp op) {
  switch (op) {
    case ReduceOp::kSum:
      return ncclSum;
    case ReduceOp::kAvg:
      return ncclAvg;
    case ReduceOp::kMax:
      return ncclMax;
    case ReduceOp::kMin:
      return ncclMin;
  }
  return ncclSum;
}

ncclConfig_t NonBlocking() {
  ncclConfig_t config = NCCL_CONFIG_INITIALIZER;
  config.blocking = 0;
  return config;
}

ncclComm_t C(Api::Comm comm) { return static_cast<ncclComm_t>(comm); }
cudaStream_t S(Api::Stream stream) { return static_cast<cudaStream_t>(stream); }
cudaEvent_t E(Api::Event event) { return static_cast<cudaEvent_t>(event); }

class RealNccl final : public Api {
 public:
  std::string Version() const override {
    int v = 0;
    (void)ncclGetVersion(&v);
    return absl::StrCat("NCCL ", v / 10000, ".", (v / 100) % 100, ".", v % 100);
  }
  runtime::Allocator& DeviceAllocator() override {
    return runtime::kernels::cuda::DeviceAllocator();
  }
  absl::StatusOr<std::string> DeviceId() override {
    int device = 0;
    if (absl::Status s = FromCuda(cudaGetDevice(&device), "get device"); !s.ok()) return s;
    char bus[32] = {};
    if (absl::Status s = FromCuda(cudaDeviceGetPCIBusId(bus, sizeof bus, device), "PCI bus id");
        !s.ok()) {
      return s;
    }
    char host[256] = {};
    (void)gethostname(host, sizeof host - 1);
    return absl::StrCat(host, ":", bus);  // bus ids repeat across hosts
  }
  absl::StatusOr<UniqueId> GetUniqueId() override {
    ncclUniqueId raw;
    if (absl::Status s = FromNccl(ncclGetUniqueId(&raw), "ncclGetUniqueId"); !s.ok()) return s;
    static_assert(sizeof raw == UniqueId::kBytes);
    UniqueId id;
    std::memcpy(id.bytes, &raw, sizeof raw);
    return id;
  }
  absl::StatusOr<Comm> InitRank(int nranks, const UniqueId& id, int rank) override {
    ncclUniqueId raw;
    std::memcpy(&raw, id.bytes, sizeof raw);
    ncclConfig_t config = NonBlocking();
    ncclComm_t comm = nullptr;
    if (absl::Status s =
            FromNccl(ncclCommInitRankConfig(&comm, nranks, raw, rank, &config), "ncclCommInitRank");
        !s.ok()) {
      return s;
    }
    return static_cast<Comm>(comm);
  }
  absl::StatusOr<Comm> Split(Comm comm, int color, int key) override {
    ncclConfig_t config = NonBlocking();
    ncclComm_t child = nullptr;
    if (absl::Status s =
            FromNccl(ncclCommSplit(C(comm), color, key, &child, &config), "ncclCommSplit", C(comm));
        !s.ok()) {
      return s;
    }
    return static_cast<Comm>(child);
  }
  absl::StatusOr<bool> Ready(Comm comm) override {
    ncclResult_t state = ncclSuccess;
    if (absl::Status s =
            FromNccl(ncclCommGetAsyncError(C(comm), &state), "ncclCommGetAsyncError", C(comm));
        !s.ok()) {
      return s;
    }
    if (state == ncclInProgress) return false;
    if (absl::Status s = FromNccl(state, "asynchronous error", C(comm)); !s.ok()) return s;
    return true;
  }
  void Abort(Comm comm) override { (void)ncclCommAbort(C(comm)); }
  void Destroy(Comm comm) override {
    (void)ncclCommFinalize(C(comm));
    // Finalising a non-blocking communicator completes asynchronously.
    // One that failed, or has not finished within a minute, is aborted instead.
    const auto give_up = std::chrono::steady_clock::now() + std::chrono::seconds(60);
    ncclResult_t state = ncclInProgress;
    while (ncclCommGetAsyncError(C(comm), &state) == ncclSuccess && state == ncclInProgress &&
           std::chrono::steady_clock::now() < give_up) {
      std::this_thread::sleep_for(std::chrono::microseconds(50));
    }
    if (state != ncclSuccess) {
      (void)ncclCommAbort(C(comm));
      return;
    }
    (void)ncclCommDestroy(C(comm));
  }

  absl::Status AllReduce(const void* in, void* out, size_t count, DType dtype, ReduceOp op,
                         Comm comm, Stream stream) override {
    return FromNccl(ncclAllReduce(in, out, count, NcclType(dtype), NcclOp(op), C(comm), S(stream)),
                    "ncclAllReduce", C(comm));
  }
  absl::Status ReduceScatter(const void* in, void* out, size_t recv_count, DType dtype, ReduceOp op,
                             Comm comm, Stream stream) override {
    return FromNccl(
        ncclReduceScatter(in, out, recv_count, NcclType(dtype), NcclOp(op), C(comm), S(stream)),
        "ncclReduceScatter", C(comm));
  }
  absl::Status AllGather(const void* in, void* out, size_t send_count, DType dtype, Comm comm,
                         Stream stream) override {
    return FromNccl(ncclAllGather(in, out, send_count, NcclType(dtype), C(comm), S(stream)),
                    "ncclAllGather", C(comm));
  }
  absl::Status Broadcast(const void* in, void* out, size_t count, DType dtype, int root, Comm comm,
                         Stream stream) override {
    return FromNccl(ncclBroadcast(in, out, count, NcclType(dtype), root, C(comm), S(stream)),
                    "ncclBroadcast", C(comm));
  }
  absl::Status Send(const void* buffer, size_t count, DType dtype, int peer, Comm comm,
                    Stream stream) override {
    return FromNccl(ncclSend(buffer, count, NcclType(dtype), peer, C(comm), S(stream)), "ncclSend",
                    C(comm));
  }
  absl::Status Recv(void* buffer, size_t count, DType dtype, int peer, Comm comm,
                    Stream stream) override {
    return FromNccl(ncclRecv(buffer, count, NcclType(dtype), peer, C(comm), S(stream)), "ncclRecv",
                    C(comm));
  }
  absl::Status GroupStart() override { return FromNccl(ncclGroupStart(), "ncclGroupStart"); }
  absl::Status GroupEnd() override { return FromNccl(ncclGroupEnd(), "ncclGroupEnd"); }

  absl::StatusOr<Stream> CreateStream() override {
    cudaStream_t stream = nullptr;
    if (absl::Status s =
            FromCuda(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking), "stream create");
        !s.ok()) {
      return s;
    }
    return static_cast<Stream>(stream);
  }
  void DestroyStream(Stream stream) override { (void)cudaStreamDestroy(S(stream)); }
  absl::StatusOr<Event> CreateEvent() override {
    cudaEvent_t event = nullptr;
    if (absl::Status s =
            FromCuda(cudaEventCreateWithFlags(&event, cudaEventDisableTiming), "event create");
        !s.ok()) {
      return s;
    }
    return static_cast<Event>(event);
  }
  void DestroyEvent(Event event) override { (void)cudaEventDestroy(E(event)); }
  absl::Status Record(Event event, Stream stream) override {
    return FromCuda(cudaEventRecord(E(event), S(stream)), "event record");
  }
  absl::Status StreamWait(Stream stream, Event event) override {
    return FromCuda(cudaStreamWaitEvent(S(stream), E(event), 0), "stream wait");
  }
  absl::StatusOr<bool> Query(Event event) override {
    const cudaError_t e = cudaEventQuery(E(event));
    if (e == cudaErrorNotReady) return false;
    if (absl::Status s = FromCuda(e, "event query"); !s.ok()) return s;
    return true;
  }
};

}  // namespace

absl::StatusOr<Api*> NcclApi() {
  if (runtime::kernels::cuda::DeviceCount() == 0) {
    return absl::FailedPreconditionError("the nccl backend needs a CUDA GPU; none is visible");
  }
  static RealNccl* const api = new RealNccl();
  return api;
}

}  // namespace loom::comm::nccl
