// Branch-free float approximations that the compiler can vectorise (libm calls are not), and
// reductions in fixed lanes, for the element-wise kernels on the hot path (compiled per instruction
// set with LOOM_VECTORIZED, kernels/cpu/vectorize.h).
#pragma once

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstdint>

namespace loom::runtime::kernels::cpu {

// tanh(x) as a 13/6 rational approximation on [-7.9, 7.9] (the minimax fit Eigen uses for
// ptanh<float>); within 8 ulp of tanh for |x| >= 1e-3 (tests/runtime/kernels/fast_math_test.cc).
// Saturates to ±1 beyond the clamp.
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

// e^x, within 2 ulp of exp over [-87.3, 88.7] (tests/runtime/kernels/fast_math_test.cc):
// Cephes' range reduction x = n·ln2 + r, |r| <= ln2/2 (n the nearest integer), and its degree-6
// polynomial for e^r, then e^r · 2^n as two exact power-of-two factors (each exponent within [-75,
// 65], so every factor is a normal float and the one rounding is the last product's): results below
// FLT_MIN come out subnormal, then 0 (x < -103.9); above FLT_MAX they are +Inf; NaN stays NaN.
inline float FastExp(float x) {
  // NaN compares false, so it takes the lower bound here and is restored at the end.
  float c = x > -104.0f ? x : -104.0f;
  c = c < 89.0f ? c : 89.0f;
  // n = round(c / ln2) by the 1.5·2^23 trick (exact for |c / ln2| < 2^22): a floor call would
  // keep the loop from vectorising.
  const float n = (c * 1.44269504088896341f + 12582912.0f) - 12582912.0f;
  float r = c - n * 0.693359375f;  // ln2 in two parts, so n·ln2 is exact enough
  r = r - n * -2.12194440e-4f;
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  const float e = p * (r * r) + r + 1.0f;
  const int32_t ni = static_cast<int32_t>(n);  // in [-150, 129]
  const int32_t half = ni >> 1;                // floor(n / 2)
  const float lo = std::bit_cast<float>((half + 127) << 23);
  const float hi = std::bit_cast<float>((ni - half + 127) << 23);
  const float result = (e * lo) * hi;
  return x == x ? result : x;
}

// Sum over i in [0, n) of term(i), kept in kLanes interleaved partial sums added in a fixed order
// at the end: the compiler vectorises the lanes, and the result is the same bits for every vector
// width (it is not the sequential sum's bits).
inline constexpr int kLanes = 16;

template <typename Term>
inline float LaneSum(int64_t n, Term term) {
  float acc[kLanes] = {};
  int64_t i = 0;
  for (; i + kLanes <= n; i += kLanes) {
    for (int l = 0; l < kLanes; ++l) acc[l] += term(i + l);
  }
  for (int l = 0; i + l < n; ++l) acc[l] += term(i + l);
  for (int width = kLanes / 2; width >= 1; width /= 2) {
    for (int l = 0; l < width; ++l) acc[l] += acc[l + width];
  }
  return acc[0];
}

// max over i in [0, n) of v[i] (n >= 1), vectorisable; NaN-free inputs assumed.
inline float LaneMax(const float* v, int64_t n) {
  float acc[kLanes];
  for (int l = 0; l < kLanes; ++l) acc[l] = v[0];
  int64_t i = 0;
  for (; i + kLanes <= n; i += kLanes) {
    for (int l = 0; l < kLanes; ++l) acc[l] = acc[l] > v[i + l] ? acc[l] : v[i + l];
  }
  for (int l = 0; i + l < n; ++l) acc[l] = acc[l] > v[i + l] ? acc[l] : v[i + l];
  float m = acc[0];
  for (int l = 1; l < kLanes; ++l) m = m > acc[l] ? m : acc[l];
  return m;
}

}  // namespace loom::runtime::kernels::cpu
