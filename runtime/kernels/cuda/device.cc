#include "runtime/kernels/cuda/device.h"

#include <cuda_runtime_api.h>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "runtime/base/check.h"

namespace loom::runtime::kernels::cuda {

int DeviceCount() {
  int count = 0;
  if (cudaGetDeviceCount(&count) != cudaSuccess) {
    (void)cudaGetLastError();  // no driver or no device: not an error for the caller
    return 0;
  }
  return count;
}

std::string DeviceDescription(int device) {
  cudaDeviceProp prop{};
  const cudaError_t e = cudaGetDeviceProperties(&prop, device);
  if (e != cudaSuccess) {
    (void)cudaGetLastError();
    return absl::StrCat("CUDA device ", device, ": ", cudaGetErrorString(e));
  }
  return absl::StrFormat("%s (sm_%d%d, %.1f GiB)", prop.name, prop.major, prop.minor,
                         static_cast<double>(prop.totalGlobalMem) / (1 << 30));
}

runtime::Allocator& DeviceAllocator() {
  static runtime::Allocator* allocator = new runtime::Allocator(  // never destroyed, as Default()
      runtime::Allocator::CacheBytesFromEnv("LOOM_DEVICE_CACHE_BYTES", int64_t{4} << 30),
      {.name = "CUDA device",
       .allocate = [](size_t bytes) -> void* {
         void* p = nullptr;
         if (cudaMalloc(&p, bytes) != cudaSuccess) {
           (void)cudaGetLastError();  // out of memory: the allocator releases its cache and retries
           return nullptr;
         }
         return p;
       },
       .release = [](void* p) { cudaFree(p); },
       .device = runtime::Device::kCuda,
       .copy =
           [](void* dst, const void* src, size_t bytes) {
             // Unified addressing tells host from device memory on either side.
             const cudaError_t e = cudaMemcpy(dst, src, bytes, cudaMemcpyDefault);
             LOOM_CHECK(e == cudaSuccess)
                 << "copy of " << bytes
                 << " bytes to or from the CUDA device: " << cudaGetErrorString(e);
           },
       .set =
           [](void* p, int byte, size_t bytes) {
             const cudaError_t e = cudaMemset(p, byte, bytes);
             LOOM_CHECK(e == cudaSuccess)
                 << "memset of " << bytes << " bytes on the CUDA device: " << cudaGetErrorString(e);
           }});
  return *allocator;
}

absl::StatusOr<runtime::Tensor> ToDevice(const runtime::Tensor& host) {
  runtime::Tensor d =
      runtime::Tensor::Empty(host.shape(), host.dtype(), host.tag(), &DeviceAllocator());
  if (host.nbytes() > 0 && cudaMemcpy(d.device_data(), host.raw_data(), host.nbytes(),
                                      cudaMemcpyHostToDevice) != cudaSuccess) {
    return LastError("copy of a tensor to the device");
  }
  return d;
}

absl::StatusOr<runtime::Tensor> ToHost(const runtime::Tensor& device) {
  runtime::Tensor h = runtime::Tensor::Empty(device.shape(), device.dtype(), device.tag(),
                                             &runtime::Allocator::Default());
  if (device.nbytes() > 0 && cudaMemcpy(h.raw_data(), device.device_data(), device.nbytes(),
                                        cudaMemcpyDeviceToHost) != cudaSuccess) {
    return LastError("copy of a tensor to the host");
  }
  return h;
}

absl::Status LastError(const char* what) {
  const cudaError_t e = cudaGetLastError();
  if (e == cudaSuccess) return absl::OkStatus();
  return absl::InternalError(
      absl::StrCat(what, ": ", cudaGetErrorName(e), " (", cudaGetErrorString(e), ")"));
}

}  // namespace loom::runtime::kernels::cuda
