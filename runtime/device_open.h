// Opening a device by name, for programs whose user chooses where to train (train_gpt --device):
//
//   LOOM_ASSIGN_OR_RETURN(OpenedDevice d, OpenDevice("cuda"));
//   options.device = d.allocator;            // nullptr for "cpu": the host
//
// The build chooses the implementation: with the CUDA backend (runtime/kernels/cuda/
// open_device.cc) "cuda" registers the CUDA twins and gives cuda::DeviceAllocator(), or fails
// when no device is visible; without it (runtime/open_device_host_only.cc) "cuda" fails saying
// the build has none. Any other name fails listing the choices.
#pragma once

#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "runtime/allocator.h"

namespace loom::runtime {

struct OpenedDevice {
  Allocator* allocator = nullptr;  // where tensors go; nullptr: the host
  std::string description;         // "host", "NVIDIA H200 (sm_90, 139.8 GiB)"
  // Dense bf16 peak of the device in GFLOP/s for MFU (DenseBf16PeakGflops); 0: not known.
  double peak_bf16_gflops = 0.0;
  // Devices of this kind the process sees (the opened one is the first of them).
  int visible = 0;
};

absl::StatusOr<OpenedDevice> OpenDevice(absl::string_view name);

// The dense (no sparsity) bf16 tensor-core peak, GFLOP/s, of a GPU by its CUDA name ("NVIDIA H100
// 80GB HBM3"), from the vendors' data sheets; 0 for a GPU not in the table.
double DenseBf16PeakGflops(absl::string_view gpu_name);

}  // namespace loom::runtime
