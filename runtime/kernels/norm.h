// LayerNorm and RMSNorm over the last dimension, forward and backward.
//
//   LayerNormForward(x, w, b, 1e-5f, out, mean, rstd);      // x, out: [N, C]; mean, rstd: [N]
//   LayerNormBackward(dout, x, w, mean, rstd, dx, dw, db);   // dx, dw, db accumulated
//   RMSNormForward(x, w, 1e-6f, out, rstd);
//   RMSNormBackward(dout, x, w, rstd, dx, dw);
//
// x may have any leading shape ([B, T, C] is read as [B·T, C]); statistics are per row. f32, host
// memory (synchronous) or device memory (the CUDA twins). Backward adds into dx, dw, db (zero them
// first for a plain gradient); dw and db sum rows in a fixed order, so results do not depend on
// the thread count.
#pragma once

#include "runtime/tensor.h"

namespace loom::runtime::kernels {

// out = (x - mean) · rstd · w + b with rstd = 1/sqrt(var + eps) (biased variance, as PyTorch).
// Saves mean[N] and rstd[N] for the backward.
void LayerNormForward(const Tensor& x, const Tensor& w, const Tensor& b, float eps, Tensor& out,
                      Tensor& mean, Tensor& rstd);
void LayerNormBackward(const Tensor& dout, const Tensor& x, const Tensor& w, const Tensor& mean,
                       const Tensor& rstd, Tensor& dx, Tensor& dw, Tensor& db);

// out = x · rstd · w with rstd = 1/sqrt(mean(x²) + eps). Saves rstd[N].
void RMSNormForward(const Tensor& x, const Tensor& w, float eps, Tensor& out, Tensor& rstd);
void RMSNormBackward(const Tensor& dout, const Tensor& x, const Tensor& w, const Tensor& rstd,
                     Tensor& dx, Tensor& dw);

}  // namespace loom::runtime::kernels
