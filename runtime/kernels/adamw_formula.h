// One element of the AdamW update (runtime/kernels/adamw.h), shared by the CPU kernel and its CUDA
// twin: with no contracted multiply-adds on either side (-ffp-contract=off, nvcc --fmad=false)
// and IEEE division and square root, both give the same bits.
#pragma once

#include <cmath>
#include <cstdint>

#include "runtime/host_device.h"
#include "runtime/kernels/adamw.h"

namespace loom::runtime::kernels {

// The per-step constants (bias corrections in double, then f32).
struct AdamWStep {
  float b1, b2, correction1, correction2, decay, lr, eps;
};
inline AdamWStep MakeAdamWStep(const AdamWConfig& c, int64_t step) {
  return {.b1 = c.beta1,
          .b2 = c.beta2,
          .correction1 = static_cast<float>(1.0 - std::pow(static_cast<double>(c.beta1), step)),
          .correction2 = static_cast<float>(1.0 - std::pow(static_cast<double>(c.beta2), step)),
          .decay = 1.0f - c.lr * c.weight_decay,
          .lr = c.lr,
          .eps = c.eps};
}

LOOM_HOST_DEVICE inline void AdamWElement(const AdamWStep& k, float& p, float g, float& m,
                                          float& v) {
  const float mi = k.b1 * m + (1.0f - k.b1) * g;
  const float vi = k.b2 * v + (1.0f - k.b2) * g * g;
  m = mi;
  v = vi;
  const float mhat = mi / k.correction1;
  const float vhat = vi / k.correction2;
  p = p * k.decay - k.lr * mhat / (sqrtf(vhat) + k.eps);
}

}  // namespace loom::runtime::kernels
