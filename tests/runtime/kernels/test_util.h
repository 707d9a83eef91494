// Shared helpers for kernel tests: random inputs from std::mt19937 (independent of loom's RNG),
// a double-precision loss Σ out·dout, and a central finite-difference gradient check.
//
//   Tensor x = RandomTensor({7, 33}, /*seed=*/1);
//   auto loss = [&] { LayerNormForward(x, w, b, eps, out, mean, rstd); return Dot(out, dout); };
//   ExpectGradientMatches(loss, x, dx_analytic, "LayerNorm dx");
#pragma once

#include <gtest/gtest.h>

#include <cmath>
#include <functional>
#include <random>
#include <string>
#include <vector>

#include "runtime/tensor.h"

namespace loom::runtime::kernels::testing {

inline Tensor RandomTensor(const Shape& shape, uint32_t seed, float scale = 1.0f,
                           MemoryTag tag = MemoryTag::kActivation) {
  std::mt19937 gen(seed);
  std::normal_distribution<float> dist(0.0f, scale);
  Tensor t = Tensor::Empty(shape, DType::kF32, tag);
  float* p = t.data<float>();
  for (int64_t i = 0; i < t.numel(); ++i) p[i] = dist(gen);
  return t;
}

// `t` converted to `dtype` (round to nearest even when narrowing).
inline Tensor ToDType(const Tensor& t, DType dtype) {
  Tensor out = Tensor::Empty(t.shape(), dtype, MemoryTag::kActivation);
  ConvertBuffer(t.raw_data(), t.dtype(), out.raw_data(), dtype, t.numel());
  return out;
}

inline Tensor RandomIds(const Shape& shape, int32_t vocab, uint32_t seed) {
  std::mt19937 gen(seed);
  std::uniform_int_distribution<int32_t> dist(0, vocab - 1);
  Tensor t = Tensor::Empty(shape, DType::kI32, MemoryTag::kActivation);
  int32_t* p = t.data<int32_t>();
  for (int64_t i = 0; i < t.numel(); ++i) p[i] = dist(gen);
  return t;
}

// Σ a·b in double.
inline double Dot(const Tensor& a, const Tensor& b) {
  const float* pa = a.data<float>();
  const float* pb = b.data<float>();
  double s = 0.0;
  for (int64_t i = 0; i < a.numel(); ++i) s += static_cast<double>(pa[i]) * pb[i];
  return s;
}

// Up to `max_points` element indices of a tensor of n elements: the first, the last and evenly
// spread ones in between.
inline std::vector<int64_t> ProbeIndices(int64_t n, int64_t max_points = 24) {
  std::vector<int64_t> idx;
  if (n <= max_points) {
    for (int64_t i = 0; i < n; ++i) idx.push_back(i);
    return idx;
  }
  for (int64_t k = 0; k < max_points; ++k) idx.push_back(k * (n - 1) / (max_points - 1));
  return idx;
}

struct GradTolerance {
  double step = 1e-2;  // central-difference step on the f32 input
  double atol = 5e-4;  // |analytic - numeric| <= atol + rtol·|numeric|
  double rtol = 5e-3;
};

// Compares `analytic` (the gradient of loss() with respect to `input`) with central finite
// differences of loss() at ProbeIndices of `input`. loss() must recompute from `input`.
inline void ExpectGradientMatches(const std::function<double()>& loss, Tensor& input,
                                  const Tensor& analytic, const std::string& what,
                                  GradTolerance tol = {}) {
  ASSERT_EQ(input.numel(), analytic.numel()) << what;
  float* x = input.data<float>();
  const float* g = analytic.data<float>();
  for (int64_t i : ProbeIndices(input.numel())) {
    const float saved = x[i];
    x[i] = static_cast<float>(saved + tol.step);
    const double up = loss();
    x[i] = static_cast<float>(saved - tol.step);
    const double down = loss();
    x[i] = saved;
    const double numeric = (up - down) / (2.0 * tol.step);
    EXPECT_NEAR(g[i], numeric, tol.atol + tol.rtol * std::fabs(numeric))
        << what << " at element " << i << " of " << input.DebugString();
  }
  loss();  // leave outputs consistent with the restored input
}

// Element-wise comparison with a reference in double.
inline void ExpectAllNear(const Tensor& actual, const std::vector<double>& expected, double atol,
                          double rtol, const std::string& what) {
  ASSERT_EQ(actual.numel(), static_cast<int64_t>(expected.size())) << what;
  const std::vector<float> a = actual.ToF32Vector();
  int64_t failures = 0;
  for (size_t i = 0; i < expected.size(); ++i) {
    if (std::fabs(a[i] - expected[i]) > atol + rtol * std::fabs(expected[i])) {
      if (++failures <= 5) {
        ADD_FAILURE() << what << ": element " << i << " is " << a[i] << ", expected "
                      << expected[i];
      }
    }
  }
  EXPECT_EQ(failures, 0) << what << ": " << failures << " of " << expected.size()
                         << " elements out of tolerance";
}

}  // namespace loom::runtime::kernels::testing
