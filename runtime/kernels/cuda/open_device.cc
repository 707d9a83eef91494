// OpenDevice for builds with the CUDA backend (runtime/device_open.h).
#include "absl/strings/str_cat.h"
#include "runtime/device_open.h"
#include "runtime/kernels/cuda/cuda_kernels.h"
#include "runtime/kernels/cuda/device.h"

namespace loom::runtime {

absl::StatusOr<OpenedDevice> OpenDevice(absl::string_view name) {
  if (name == "cpu") return OpenedDevice{.allocator = nullptr, .description = "host"};
  if (name != "cuda") {
    return absl::InvalidArgumentError(
        absl::StrCat("--device must be cpu or cuda, got '", name, "'"));
  }
  if (kernels::cuda::DeviceCount() == 0) {
    return absl::FailedPreconditionError(
        "--device cuda: no CUDA device is visible (no GPU, no driver, or CUDA_VISIBLE_DEVICES "
        "hides them)");
  }
  kernels::cuda::RegisterKernels();
  OpenedDevice d{.allocator = &kernels::cuda::DeviceAllocator(),
                 .description = kernels::cuda::DeviceDescription()};
  d.peak_bf16_gflops = DenseBf16PeakGflops(d.description);
  d.visible = kernels::cuda::DeviceCount();
  return d;
}

}  // namespace loom::runtime
