// Checks the counter-based RNG in runtime/rng.h. Philox4x32-10 is compared with the known-answer
// vectors published in Random123's tests/kat_vectors ("philox4x32 10" lines: counter[4], key[2] ->
// output[4]) and Fnv1a64 with the FNV reference test vectors; RandomBits is checked to place
// (index, name hash, seed) in the counter and key words as rng.h documents. Fills are checked for
// the properties initialisation relies on: any slice [a, b) filled with offset a equals the same
// elements of the whole fill bit for bit, results do not depend on the thread count, equal inputs
// repeat and different seeds / names / index words differ. Distributions get loose statistical
// bounds (moments of 1e5 samples) and the documented range [lo, hi).
#include "runtime/rng.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <random>
#include <utility>
#include <vector>

#include "runtime/parallel.h"
#include "runtime/tensor.h"

namespace loom::runtime {
namespace {

struct KnownAnswer {
  PhiloxCounter counter;
  PhiloxKey key;
  PhiloxCounter expected;
};

// Random123 tests/kat_vectors, the three "philox4x32 10" lines.
const KnownAnswer kPhiloxKnownAnswers[] = {
    {{0x00000000u, 0x00000000u, 0x00000000u, 0x00000000u},
     {0x00000000u, 0x00000000u},
     {0x6627e8d5u, 0xe169c58du, 0xbc57ac4cu, 0x9b00dbd8u}},
    {{0xffffffffu, 0xffffffffu, 0xffffffffu, 0xffffffffu},
     {0xffffffffu, 0xffffffffu},
     {0x408f276du, 0x41c83b0eu, 0xa20bc7c6u, 0x6d5451fdu}},
    {{0x243f6a88u, 0x85a308d3u, 0x13198a2eu, 0x03707344u},
     {0xa4093822u, 0x299f31d0u},
     {0xd16cfe09u, 0x94fdccebu, 0x5001e420u, 0x24126ea1u}},
};

TEST(PhiloxTest, MatchesRandom123KnownAnswers) {
  for (const KnownAnswer& kat : kPhiloxKnownAnswers) {
    EXPECT_EQ(Philox4x32(kat.counter, kat.key), kat.expected)
        << "counter " << std::hex << kat.counter[0] << " " << kat.counter[1] << " "
        << kat.counter[2] << " " << kat.counter[3] << " key " << kat.key[0] << " " << kat.key[1];
  }
}

TEST(Fnv1a64Test, MatchesReferenceVectors) {
  EXPECT_EQ(Fnv1a64(""), 0xcbf29ce484222325ull);
  EXPECT_EQ(Fnv1a64("a"), 0xaf63dc4c8601ec8cull);
  EXPECT_EQ(Fnv1a64("foobar"), 0x85944171f73967e8ull);
  EXPECT_EQ(Fnv1a64("h.0.mlp.c_fc.weight"), 0x586cfd1c9df92d83ull);  // computed in Python
}

TEST(RandomBitsTest, CounterIsIndexThenNameHashAndKeyIsSeed) {
  const std::pair<uint64_t, uint64_t> seeds_and_hashes[] = {
      {0, 0}, {1337, Fnv1a64("wte")}, {0x0123456789ABCDEFull, 0xFEDCBA9876543210ull}};
  const uint64_t indices[] = {0, 1, 4095, 0xFFFFFFFFull, 0x100000000ull, 0xDEADBEEFCAFEF00Dull};
  for (const auto& [seed, hash] : seeds_and_hashes) {
    for (uint64_t index : indices) {
      const PhiloxCounter counter = {
          static_cast<uint32_t>(index), static_cast<uint32_t>(index >> 32),
          static_cast<uint32_t>(hash), static_cast<uint32_t>(hash >> 32)};
      const PhiloxKey key = {static_cast<uint32_t>(seed), static_cast<uint32_t>(seed >> 32)};
      EXPECT_EQ(RandomBits(seed, hash, index), Philox4x32(counter, key))
          << "seed " << seed << " hash " << hash << " index " << index;
    }
  }
}

std::vector<uint32_t> Bits(const Tensor& t) {
  std::vector<uint32_t> out(static_cast<size_t>(t.numel()));
  if (t.numel() > 0) std::memcpy(out.data(), t.data<float>(), out.size() * sizeof(float));
  return out;
}

enum class Kind { kUniform, kNormal };

Tensor Fill(Kind kind, int64_t n, uint64_t seed, absl::string_view name, int64_t offset) {
  Tensor t = Tensor::Empty({n}, DType::kF32, MemoryTag::kParam);
  if (kind == Kind::kUniform) {
    FillUniform(t, seed, name, offset, -0.5f, 1.5f);
  } else {
    FillNormal(t, seed, name, offset, 0.25f, 0.02f);
  }
  return t;
}

// Restores the thread count a test changed.
class ThreadCountGuard {
 public:
  ThreadCountGuard() : saved_(NumThreads()) {}
  ~ThreadCountGuard() { SetNumThreads(saved_); }

 private:
  int saved_;
};

class FillTest : public ::testing::TestWithParam<Kind> {};

TEST_P(FillTest, AnySliceEqualsTheSameElementsOfTheWholeFill) {
  constexpr int64_t kN = 10007;
  constexpr uint64_t kSeed = 1337;
  const char* const kName = "h.0.mlp.c_fc.weight";
  const std::vector<uint32_t> whole = Bits(Fill(GetParam(), kN, kSeed, kName, 0));

  std::vector<std::pair<int64_t, int64_t>> ranges = {
      {0, 0},     {0, kN},     {5, 5},     {kN, kN},     {0, 1},       {kN - 1, kN},
      {1, kN},    {0, kN - 1}, {1, 4097},  {4095, 4097}, {4096, 8192}, {4097, 8193},
      {3, 10001}, {777, 7777}, {8191, kN}, {1, 2},       {9999, 10003}};
  std::mt19937 gen(42);
  for (int i = 0; i < 40; ++i) {
    int64_t a = std::uniform_int_distribution<int64_t>(0, kN)(gen);
    int64_t b = std::uniform_int_distribution<int64_t>(0, kN)(gen);
    if (a > b) std::swap(a, b);
    ranges.emplace_back(a, b);
  }
  for (const auto& [a, b] : ranges) {
    const std::vector<uint32_t> part = Bits(Fill(GetParam(), b - a, kSeed, kName, a));
    ASSERT_EQ(part.size(), static_cast<size_t>(b - a));
    const std::vector<uint32_t> expected(whole.begin() + a, whole.begin() + b);
    EXPECT_EQ(part, expected) << "slice [" << a << ", " << b << ")";
  }
}

TEST_P(FillTest, DoesNotDependOnTheThreadCount) {
  ThreadCountGuard guard;
  constexpr int64_t kN = 100003;  // many ParallelFor chunks
  SetNumThreads(1);
  const std::vector<uint32_t> one = Bits(Fill(GetParam(), kN, 7, "w", 3));
  SetNumThreads(2);
  const std::vector<uint32_t> two = Bits(Fill(GetParam(), kN, 7, "w", 3));
  SetNumThreads(3);
  const std::vector<uint32_t> three = Bits(Fill(GetParam(), kN, 7, "w", 3));
  EXPECT_EQ(one, two);
  EXPECT_EQ(one, three);
}

TEST_P(FillTest, SameInputsRepeatAndDifferentInputsDiffer) {
  constexpr int64_t kN = 4099;
  const std::vector<uint32_t> base = Bits(Fill(GetParam(), kN, 1, "a", 0));
  EXPECT_EQ(Bits(Fill(GetParam(), kN, 1, "a", 0)), base);

  // Fraction of positions where two streams agree; independent streams almost never do.
  const auto agreement = [&](const std::vector<uint32_t>& other) {
    int64_t same = 0;
    for (int64_t i = 0; i < kN; ++i) same += base[i] == other[i];
    return static_cast<double>(same) / kN;
  };
  EXPECT_LT(agreement(Bits(Fill(GetParam(), kN, 2, "a", 0))), 0.01) << "seed";
  EXPECT_LT(agreement(Bits(Fill(GetParam(), kN, 1ull | (1ull << 32), "a", 0))), 0.01)
      << "seed high word";
  EXPECT_LT(agreement(Bits(Fill(GetParam(), kN, 1, "b", 0))), 0.01) << "name";
  EXPECT_LT(agreement(Bits(Fill(GetParam(), kN, 1, "a.", 0))), 0.01) << "name suffix";
  EXPECT_LT(agreement(Bits(Fill(GetParam(), kN, 1, "a", int64_t{1} << 32))), 0.01)
      << "index high word";
  EXPECT_LT(agreement(Bits(Fill(GetParam(), kN, 1, "a", 1))), 0.01) << "shifted by one";
}

INSTANTIATE_TEST_SUITE_P(UniformAndNormal, FillTest,
                         ::testing::Values(Kind::kUniform, Kind::kNormal),
                         [](const ::testing::TestParamInfo<Kind>& info) {
                           return info.param == Kind::kUniform ? "Uniform" : "Normal";
                         });

struct Moments {
  double mean;
  double stddev;
};

Moments ComputeMoments(const Tensor& t) {
  const float* p = t.data<float>();
  double sum = 0, sum_sq = 0;
  for (int64_t i = 0; i < t.numel(); ++i) sum += p[i];
  const double mean = sum / static_cast<double>(t.numel());
  for (int64_t i = 0; i < t.numel(); ++i) sum_sq += (p[i] - mean) * (p[i] - mean);
  return {mean, std::sqrt(sum_sq / static_cast<double>(t.numel() - 1))};
}

TEST(FillNormalTest, MomentsMatchTheRequestedDistribution) {
  constexpr int64_t kN = 100000;
  const std::pair<float, float> params[] = {{0.0f, 1.0f}, {3.0f, 0.5f}, {-1.0f, 2.0f}};
  for (const auto& [mean, stddev] : params) {
    Tensor t = Tensor::Empty({kN}, DType::kF32, MemoryTag::kParam);
    FillNormal(t, 2024, "normal", 0, mean, stddev);
    const float* p = t.data<float>();
    for (int64_t i = 0; i < kN; ++i) ASSERT_TRUE(std::isfinite(p[i])) << "element " << i;
    const Moments m = ComputeMoments(t);
    // The sample mean's standard error is stddev / sqrt(1e5) ~ 0.003 * stddev; 0.02 is loose.
    EXPECT_NEAR(m.mean, mean, 0.02 * std::max(1.0f, stddev))
        << "N(" << mean << ", " << stddev << ")";
    EXPECT_NEAR(m.stddev, stddev, 0.02 * std::max(1.0f, stddev))
        << "N(" << mean << ", " << stddev << ")";
    // Standardised tails: about 4.55% of N(0, 1) lies beyond 2 sigma.
    int64_t beyond_two = 0;
    for (int64_t i = 0; i < kN; ++i) beyond_two += std::fabs((p[i] - mean) / stddev) > 2.0f;
    EXPECT_NEAR(static_cast<double>(beyond_two) / kN, 0.0455, 0.005);
  }
}

TEST(FillUniformTest, StaysInRangeWithTheRightMoments) {
  constexpr int64_t kN = 100000;
  const std::pair<float, float> ranges[] = {{0.0f, 1.0f}, {-0.02f, 0.02f}, {-2.0f, 3.0f}};
  for (const auto& [lo, hi] : ranges) {
    Tensor t = Tensor::Empty({kN}, DType::kF32, MemoryTag::kParam);
    FillUniform(t, 99, "uniform", 0, lo, hi);
    const float* p = t.data<float>();
    for (int64_t i = 0; i < kN; ++i) {
      ASSERT_GE(p[i], lo) << "element " << i;
      ASSERT_LT(p[i], hi) << "element " << i;
    }
    const Moments m = ComputeMoments(t);
    const double width = static_cast<double>(hi) - lo;
    EXPECT_NEAR(m.mean, (static_cast<double>(lo) + hi) / 2, 0.02 * width);
    EXPECT_NEAR(m.stddev, width / std::sqrt(12.0), 0.02 * width);
  }
}

// The largest draw a 24-bit uniform can make is 1 - 2^-24. Element 3046355 of stream
// (seed 7, "uniform_edge") is such a draw: the top 24 bits of its first Philox word are all ones
// (found by scanning with an independent Philox4x32-10 checked against the vectors above). The
// result must still be below hi; for [1, 2), lo + (hi - lo) * (1 - 2^-24) = 2 - 2^-24 lies halfway
// between 2 - 2^-23 and 2, so computing it in f32 would round to hi.
TEST(FillUniformTest, LargestDrawStaysBelowHi) {
  constexpr uint64_t kSeed = 7;
  constexpr int64_t kIndex = 3046355;
  ASSERT_EQ(RandomBits(kSeed, Fnv1a64("uniform_edge"), kIndex)[0] >> 8, 0xFFFFFFu);
  const std::pair<float, float> ranges[] = {
      {1.0f, 2.0f}, {0.0f, 1.0f}, {-1.0f, 1.0f}, {3.0f, 4.0f}, {-0.02f, 0.02f}};
  for (const auto& [lo, hi] : ranges) {
    Tensor t = Tensor::Empty({1}, DType::kF32, MemoryTag::kParam);
    FillUniform(t, kSeed, "uniform_edge", kIndex, lo, hi);
    const float v = t.data<float>()[0];
    EXPECT_GE(v, lo) << "[" << lo << ", " << hi << ")";
    EXPECT_LT(v, hi) << "[" << lo << ", " << hi << ")";
  }
}

}  // namespace
}  // namespace loom::runtime
