#include "runtime/kernels/cuda_twins.h"

namespace loom::runtime::kernels {

CudaTwinTable& CudaTwins() {
  static CudaTwinTable table;
  return table;
}

}  // namespace loom::runtime::kernels
