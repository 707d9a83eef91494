// The vectorisable math under the element-wise kernels (kernels/cpu/fast_math.h): FastExp and
// FastTanh against the double-precision functions to a stated ulp bound over dense sweeps, their
// special values, and the fixed-lane reductions against exact integer sums and a double sum.
#include "runtime/kernels/cpu/fast_math.h"

#include <gtest/gtest.h>

#include <bit>
#include <cfloat>
#include <cmath>
#include <cstdint>
#include <limits>
#include <random>
#include <vector>

namespace loom::runtime::kernels::cpu {
namespace {

// Distance in units in the last place between `got` and the correctly rounded `want`.
double Ulps(float got, double want) {
  const float rounded = static_cast<float>(want);
  const double ulp = std::nextafter(std::fabs(rounded), std::numeric_limits<float>::infinity()) -
                     std::fabs(rounded);
  return std::fabs(static_cast<double>(got) - want) / ulp;
}

TEST(FastExpTest, WithinTwoUlpOverTheNormalRange) {
  double worst = 0.0;
  float worst_x = 0.0f;
  // Every 257th float bit pattern (an odd stride, so every mantissa residue occurs) in the range.
  for (uint64_t bits = 0; bits < (uint64_t{1} << 32); bits += 257) {
    const float x = std::bit_cast<float>(static_cast<uint32_t>(bits));
    if (!(x >= -87.3f && x <= 88.7f)) continue;
    const double u = Ulps(FastExp(x), std::exp(static_cast<double>(x)));
    if (u > worst) worst = u, worst_x = x;
  }
  EXPECT_LE(worst, 2.0) << "at x = " << worst_x;
}

TEST(FastExpTest, SpecialValues) {
  EXPECT_EQ(FastExp(0.0f), 1.0f);
  EXPECT_EQ(FastExp(-110.0f), 0.0f);  // below the smallest subnormal
  // Subnormal results: within one subnormal step (2^-149) of the true value.
  for (float x : {-88.0f, -95.0f, -100.0f, -103.0f}) {
    EXPECT_NEAR(FastExp(x), std::exp(static_cast<double>(x)), 1.5e-45) << x;
  }
  EXPECT_EQ(FastExp(-std::numeric_limits<float>::infinity()), 0.0f);
  EXPECT_EQ(FastExp(89.0f), std::numeric_limits<float>::infinity());
  EXPECT_EQ(FastExp(std::numeric_limits<float>::infinity()),
            std::numeric_limits<float>::infinity());
  EXPECT_TRUE(std::isnan(FastExp(std::numeric_limits<float>::quiet_NaN())));
  EXPECT_LE(Ulps(FastExp(88.7f), std::exp(static_cast<double>(88.7f))),
            2.0);  // n = 128: finite, not Inf
}

TEST(FastTanhTest, WithinEightUlpAwayFromZero) {
  // Relative to tanh near 0 the rational fit is also good; the bound is stated on |x| >= 1e-3.
  double worst = 0.0;
  float worst_x = 0.0f;
  std::mt19937 gen(3);
  std::uniform_real_distribution<float> d(-9.0f, 9.0f);
  for (int i = 0; i < 2000000; ++i) {
    const float x = d(gen);
    if (std::fabs(x) < 1e-3f) continue;
    const double u = Ulps(FastTanh(x), std::tanh(static_cast<double>(x)));
    if (u > worst) worst = u, worst_x = x;
  }
  EXPECT_LE(worst, 8.0) << "at x = " << worst_x;
  EXPECT_EQ(FastTanh(20.0f), 1.0f);
  EXPECT_EQ(FastTanh(-20.0f), -1.0f);
}

TEST(LaneReductionTest, SumsAreExactOnIntegersForEveryLength) {
  for (int64_t n : {0, 1, 7, 15, 16, 17, 33, 384, 4099}) {
    // Integers below 2^24 add exactly in any order: the expected value is the closed form.
    const float sum = LaneSum(n, [](int64_t i) { return static_cast<float>(i); });
    EXPECT_EQ(sum, static_cast<float>(n * (n - 1) / 2)) << "n = " << n;
  }
}

TEST(LaneReductionTest, SumCloseToDoubleAndMaxExact) {
  std::mt19937 gen(5);
  std::normal_distribution<float> d(0.0f, 1.0f);
  for (int64_t n : {1, 5, 16, 100, 4096, 4099}) {
    std::vector<float> v(n);
    for (float& x : v) x = d(gen);
    double ref = 0.0, mag = 0.0;
    float max = v[0];
    for (float x : v) ref += x, mag += std::fabs(x), max = std::max(max, x);
    EXPECT_NEAR(LaneSum(n, [&v](int64_t i) { return v[i]; }), ref, 1e-6 * mag + 1e-7) << n;
    EXPECT_EQ(LaneMax(v.data(), n), max) << n;
  }
}

}  // namespace
}  // namespace loom::runtime::kernels::cpu
