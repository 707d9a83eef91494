// nccl::NcclApi() in a build without the CUDA backend (the build chooses this file or
// nccl_api.cc).
#include "comm/nccl/api.h"

namespace loom::comm::nccl {

absl::StatusOr<Api*> NcclApi() {
  return absl::UnimplementedError(
      "the nccl backend needs a build with the CUDA backend (nvcc found, -DLOOM_CUDA=ON); this "
      "build has none");
}

}  // namespace loom::comm::nccl
