// OpenDevice for builds without the CUDA backend (runtime/device_open.h).
#include "absl/strings/str_cat.h"
#include "runtime/device_open.h"

namespace loom::runtime {

absl::StatusOr<OpenedDevice> OpenDevice(absl::string_view name) {
  if (name == "cpu") return OpenedDevice{.allocator = nullptr, .description = "host"};
  if (name == "cuda") {
    return absl::UnimplementedError(
        "--device cuda: this build has no CUDA backend (configured with -DLOOM_CUDA=OFF or "
        "without nvcc; docs/gpu.md)");
  }
  return absl::InvalidArgumentError(absl::StrCat("--device must be cpu or cuda, got '", name, "'"));
}

}  // namespace loom::runtime
