// CUDA devices and device memory for the CUDA kernels and their tests (issue #14's first part;
// docs/gpu.md). Tensors do not live on the device yet: callers move raw buffers.
//
//   if (cuda::DeviceCount() == 0) return;            // no GPU, or no driver
//   cuda::DeviceBuffer<float> x(n);                   // cudaMalloc'd, freed on destruction
//   LOOM_RETURN_IF_ERROR(x.CopyFrom(host.data()));    // host -> device, synchronous
//   cuda::GeluForward(x.data(), y.data(), n, nullptr);
//   LOOM_RETURN_IF_ERROR(y.CopyTo(out.data()));       // device -> host after the stream's work
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <utility>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "runtime/allocator.h"
#include "runtime/tensor.h"

namespace loom::runtime::kernels::cuda {

// Devices the CUDA runtime sees: 0 without a GPU or a driver (never an error).
int DeviceCount();
// "NVIDIA H200 (sm_90, 139.8 GiB)" for `device`, or why it cannot be named.
std::string DeviceDescription(int device = 0);
// OK, or the last CUDA error (naming `what`), e.g. after a kernel launch; clears it.
absl::Status LastError(const char* what);

// The process-wide allocator of memory on the current device: cudaMalloc / cudaFree behind the
// host allocator's per-tag accounting (peaks included) and block cache (capacity
// LOOM_DEVICE_CACHE_BYTES, default 4 GiB; cached blocks are not counted in any tag).
runtime::Allocator& DeviceAllocator();

// Synchronous copies of a whole tensor between the host and the current device: a new tensor of the
// same shape, dtype and tag (on the device from DeviceAllocator(), on the host from the default
// allocator). An error names the CUDA failure.
absl::StatusOr<runtime::Tensor> ToDevice(const runtime::Tensor& host);
absl::StatusOr<runtime::Tensor> ToHost(const runtime::Tensor& device);

// Untyped device memory of `bytes` on the current device.
class DeviceMemory {
 public:
  DeviceMemory() = default;
  explicit DeviceMemory(size_t bytes);  // LOOM_CHECKs the allocation
  DeviceMemory(DeviceMemory&& o) noexcept
      : ptr_(std::exchange(o.ptr_, nullptr)), bytes_(std::exchange(o.bytes_, 0)) {}
  DeviceMemory& operator=(DeviceMemory&& o) noexcept;
  DeviceMemory(const DeviceMemory&) = delete;
  DeviceMemory& operator=(const DeviceMemory&) = delete;
  ~DeviceMemory();

  void* get() const { return ptr_; }
  size_t bytes() const { return bytes_; }
  // Synchronous copies of all bytes() to and from host memory.
  absl::Status CopyFrom(const void* host);
  absl::Status CopyTo(void* host) const;

 private:
  void* ptr_ = nullptr;
  size_t bytes_ = 0;
};

// `count` elements of T on the device.
template <typename T>
class DeviceBuffer {
 public:
  explicit DeviceBuffer(int64_t count) : memory_(static_cast<size_t>(count) * sizeof(T)) {}
  T* data() const { return static_cast<T*>(memory_.get()); }
  int64_t size() const { return static_cast<int64_t>(memory_.bytes() / sizeof(T)); }
  absl::Status CopyFrom(const T* host) { return memory_.CopyFrom(host); }
  absl::Status CopyTo(T* host) const { return memory_.CopyTo(host); }

 private:
  DeviceMemory memory_;
};

}  // namespace loom::runtime::kernels::cuda
