// One element of the AdamW and the SGD update (runtime/kernels/adamw.h), shared by the CPU kernels
// and their CUDA twins: with no contracted multiply-adds on either side (-ffp-contract=off, nvcc
// --fmad=false) and IEEE division and square root, both give the same bits. Device code includes
// it: no loom headers beyond runtime/host_device.h.
#pragma once

#include <cmath>

#include "runtime/host_device.h"

namespace loom::runtime::kernels {

// The per-step constants (kernels/adamw.h MakeAdamWStep: bias corrections in double, then f32).
struct AdamWStep {
  float b1, b2, correction1, correction2, decay, lr, eps;
};

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

// SGD with momentum as torch.optim.SGD (no dampening, not Nesterov): d = g + wd·p; the buffer is d
// on the first step, else μ·buffer + d; p -= lr·buffer.
struct SgdStep {
  float lr, momentum, weight_decay;
  bool first;
};

LOOM_HOST_DEVICE inline void SgdElement(const SgdStep& k, float& p, float g, float& buffer) {
  const float d = g + k.weight_decay * p;
  buffer = k.first ? d : k.momentum * buffer + d;
  p -= k.lr * buffer;
}

}  // namespace loom::runtime::kernels
