// Device time per kernel entry point, for LOOM_CUDA_PROFILE=1 (op_timer.cc).
#pragma once

#include "runtime/kernels/cuda_twins.h"

namespace loom::runtime::kernels::cuda {

// With LOOM_CUDA_PROFILE=1 in the environment, fills the table's op_begin / op_end / op_report
// (events on the default stream around each top-level entry point that runs a twin); else
// leaves them null.
void RegisterOpTimer(CudaTwinTable& twins);

}  // namespace loom::runtime::kernels::cuda
