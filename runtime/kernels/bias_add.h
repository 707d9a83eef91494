// Bias add for Linear layers: x[..., C] += bias[C], and its backward dbias += Σ_rows dout.
//
//   Matmul(x, w, y, {.trans_b = true});
//   BiasAdd(y, b);
//   ...
//   BiasBackward(dy, db);
//
// f32, host or device memory (the CUDA twins). The backward sums rows in a fixed order per column,
// so it is deterministic for any thread count, and the device's sums are bitwise the CPU's.
#pragma once

#include "runtime/tensor.h"

namespace loom::runtime::kernels {

// x[..., C] += bias[C], in place.
void BiasAdd(Tensor& x, const Tensor& bias);
// dbias[C] += Σ over all leading positions of dout[..., C].
void BiasBackward(const Tensor& dout, Tensor& dbias);

}  // namespace loom::runtime::kernels
