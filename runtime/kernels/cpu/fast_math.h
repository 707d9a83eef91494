// Branch-free float approximations that the compiler can vectorise (libm calls are not), for
// pointwise kernels on the hot path.
#pragma once

#include <algorithm>

namespace loom::runtime::kernels::cpu {

// tanh(x) as a 13/6 rational approximation on [-7.9, 7.9] (the minimax fit Eigen uses for
// ptanh<float>); within a few ulp of tanhf, tested against the double formula in
// tests/runtime/kernels/activation_test.cc. Saturates to ±1 beyond the clamp.
inline float FastTanh(float x) {
  const float c = std::clamp(x, -7.90531110763549805f, 7.90531110763549805f);
  const float x2 = c * c;
  float p = -2.76076847742355e-16f;
  p = p * x2 + 2.00018790482477e-13f;
  p = p * x2 + -8.60467152213735e-11f;
  p = p * x2 + 5.12229709037114e-08f;
  p = p * x2 + 1.48572235717979e-05f;
  p = p * x2 + 6.37261928875436e-04f;
  p = p * x2 + 4.89352455891786e-03f;
  float q = 1.19825839466702e-06f;
  q = q * x2 + 1.18534705686654e-04f;
  q = q * x2 + 2.26843463243900e-03f;
  q = q * x2 + 4.89352518554385e-03f;
  return c * p / q;
}

}  // namespace loom::runtime::kernels::cpu
