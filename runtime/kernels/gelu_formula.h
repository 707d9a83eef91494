// The tanh-form GELU, shared by the CPU kernels (runtime/kernels/cpu/activation.cc) and their
// CUDA twins (runtime/kernels/cuda/elementwise.cu): each computes t = tanh(GeluInner(x)) with its
// own tanh, then the same expressions.
#pragma once

#include "runtime/host_device.h"

namespace loom::runtime::kernels {

inline constexpr float kGeluScale = 0.7978845608028654f;  // √(2/π)
inline constexpr float kGeluCubic = 0.044715f;

// The argument of tanh.
LOOM_HOST_DEVICE inline float GeluInner(float x) {
  return kGeluScale * (x + kGeluCubic * x * x * x);
}
// gelu(x), given t = tanh(GeluInner(x)).
LOOM_HOST_DEVICE inline float GeluFromTanh(float x, float t) { return 0.5f * x * (1.0f + t); }
// gelu'(x), given t = tanh(GeluInner(x)).
LOOM_HOST_DEVICE inline float GeluGradFromTanh(float x, float t) {
  const float sech2 = 1.0f - t * t;
  return 0.5f * (1.0f + t) + 0.5f * x * sech2 * kGeluScale * (1.0f + 3.0f * kGeluCubic * x * x);
}

}  // namespace loom::runtime::kernels
