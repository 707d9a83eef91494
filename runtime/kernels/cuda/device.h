// CUDA devices, device memory and tensors on the device (issue #14; docs/gpu.md).
//
//   if (cuda::DeviceCount() == 0) return;                         // no GPU, or no driver
//   LOOM_ASSIGN_OR_RETURN(Tensor x, cuda::ToDevice(host));        // synchronous copy
//   Tensor y = Tensor::Empty(x.shape(), x.dtype(), tag, &cuda::DeviceAllocator());
//   kernels::GeluForward(x, y);                                   // the registered CUDA twin
//   LOOM_ASSIGN_OR_RETURN(Tensor out, cuda::ToHost(y));
#pragma once

#include <cstdint>
#include <string>

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

}  // namespace loom::runtime::kernels::cuda
