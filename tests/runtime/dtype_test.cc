// Checks the f32 <-> bf16 / f16 / fp8 e4m3 / fp8 e5m2 conversions in runtime/dtype.h against a
// reference written here from the formats' definitions, never from dtype.cc: a decoder that
// evaluates a bit pattern with double arithmetic (subnormal mant * 2^(1-bias-M), normal
// (1 + mant/2^M) * 2^(exp-bias); IEEE-like Inf/NaN for bf16/f16/e5m2, e4m3 "fn" with only
// 0x7F/0xFF as NaN), and a rounder that searches the sorted table of the format's finite values for
// the nearest one (ties to the even bit pattern), sends overflow to Inf (bf16/f16/e5m2) or
// saturates it to ±448 (e4m3). Every 16-bit and 8-bit pattern is decoded and round-tripped; f32 ->
// narrow rounding is compared with the reference at every midpoint between adjacent values and the
// f32 values just around it, at the special cases, and at a million random f32 bit patterns per
// format. A few hand-checked literals guard the reference itself.
#include "runtime/dtype.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <iterator>
#include <limits>
#include <map>
#include <ostream>
#include <random>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

namespace loom::runtime {
namespace {

constexpr float kInf = std::numeric_limits<float>::infinity();
constexpr float kNaN = std::numeric_limits<float>::quiet_NaN();

// One narrow format: its layout, its special-value convention, and the functions under test
// (widened to uint32_t so one set of checks serves every width).
struct Format {
  const char* name;
  DType dtype;
  int exponent_bits;
  int mantissa_bits;
  bool ieee_specials;  // all-ones exponent is Inf/NaN; otherwise e4m3fn (only S.1111.111 is NaN)
  uint32_t (*encode)(float);
  float (*decode)(uint32_t);

  int width() const { return 1 + exponent_bits + mantissa_bits; }
  int bias() const { return (1 << (exponent_bits - 1)) - 1; }
  uint32_t sign_bit() const { return 1u << (exponent_bits + mantissa_bits); }
  uint32_t mantissa_mask() const { return (1u << mantissa_bits) - 1; }
  uint32_t exponent_mask() const { return (1u << exponent_bits) - 1; }
  uint32_t exponent_field(uint32_t bits) const { return (bits >> mantissa_bits) & exponent_mask(); }
  uint32_t inf_bits() const { return exponent_mask() << mantissa_bits; }
  uint32_t num_patterns() const { return 1u << width(); }
};

const Format kBF16{"bf16",
                   DType::kBF16,
                   8,
                   7,
                   true,
                   [](float x) -> uint32_t { return F32ToBF16(x); },
                   [](uint32_t b) { return BF16ToF32(static_cast<uint16_t>(b)); }};
const Format kF16{"f16",
                  DType::kF16,
                  5,
                  10,
                  true,
                  [](float x) -> uint32_t { return F32ToF16(x); },
                  [](uint32_t b) { return F16ToF32(static_cast<uint16_t>(b)); }};
const Format kE4M3{"f8e4m3",
                   DType::kF8E4M3,
                   4,
                   3,
                   false,
                   [](float x) -> uint32_t { return F32ToF8E4M3(x); },
                   [](uint32_t b) { return F8E4M3ToF32(static_cast<uint8_t>(b)); }};
const Format kE5M2{"f8e5m2",
                   DType::kF8E5M2,
                   5,
                   2,
                   true,
                   [](float x) -> uint32_t { return F32ToF8E5M2(x); },
                   [](uint32_t b) { return F8E5M2ToF32(static_cast<uint8_t>(b)); }};

const Format* const kAllFormats[] = {&kBF16, &kF16, &kE4M3, &kE5M2};

// Names the format in test output instead of printing a pointer.
void PrintTo(const Format* f, std::ostream* os) { *os << f->name; }

bool IsNaNPattern(const Format& f, uint32_t bits) {
  const uint32_t mag = bits & ~f.sign_bit();
  if (f.ieee_specials) {
    return f.exponent_field(mag) == f.exponent_mask() && (mag & f.mantissa_mask()) != 0;
  }
  return mag == (f.sign_bit() - 1);  // S.1111.111
}

// For IEEE-like formats "quiet" means the top mantissa bit is set; e4m3 has one NaN pattern.
bool IsQuietNaNPattern(const Format& f, uint32_t bits) {
  if (!IsNaNPattern(f, bits)) return false;
  return !f.ieee_specials || (bits & (1u << (f.mantissa_bits - 1))) != 0;
}

// The independent decoder: the value of `bits` from the format's definition, in double.
double ReferenceDecode(const Format& f, uint32_t bits) {
  const bool negative = (bits & f.sign_bit()) != 0;
  const uint32_t exp = f.exponent_field(bits);
  const uint32_t mant = bits & f.mantissa_mask();
  const int m = f.mantissa_bits;
  double v;
  if (IsNaNPattern(f, bits)) {
    v = std::numeric_limits<double>::quiet_NaN();
  } else if (f.ieee_specials && exp == f.exponent_mask()) {
    v = std::numeric_limits<double>::infinity();
  } else if (exp == 0) {
    v = std::ldexp(static_cast<double>(mant), 1 - f.bias() - m);
  } else {
    v = std::ldexp(1.0 + std::ldexp(static_cast<double>(mant), -m),
                   static_cast<int>(exp) - f.bias());
  }
  return negative ? -v : v;
}

// The sorted finite non-negative values of a format, with their bit patterns, built from the
// reference decoder alone.
struct ValueTable {
  std::vector<std::pair<double, uint32_t>> entries;  // (value, magnitude bits), ascending
  double max_finite = 0;
  uint32_t max_finite_bits = 0;
  // bf16/f16/e5m2: the value that would follow max_finite with an unbounded exponent,
  // 2^(emax+1); magnitudes >= (max_finite + next_step) / 2 round to Inf.
  double next_step = 0;
};

ValueTable BuildTable(const Format& f) {
  ValueTable t;
  for (uint32_t b = 0; b < f.sign_bit(); ++b) {
    const double v = ReferenceDecode(f, b);
    if (std::isfinite(v)) t.entries.emplace_back(v, b);
  }
  std::sort(t.entries.begin(), t.entries.end());
  t.max_finite = t.entries.back().first;
  t.max_finite_bits = t.entries.back().second;
  const int emax = static_cast<int>(f.exponent_field(t.max_finite_bits)) - f.bias();
  t.next_step = std::ldexp(1.0, emax + 1);
  return t;
}

// Tables are built once per format and kept for the whole test binary.
const ValueTable& TableFor(const Format& f) {
  static const auto* tables = new std::map<DType, ValueTable>{
      {DType::kBF16, BuildTable(kBF16)},
      {DType::kF16, BuildTable(kF16)},
      {DType::kF8E4M3, BuildTable(kE4M3)},
      {DType::kF8E5M2, BuildTable(kE5M2)},
  };
  return tables->at(f.dtype);
}

// The independent rounder: f32 `x` to the format, round-to-nearest-even by searching the table.
// Returns the expected bit pattern; for NaN inputs returns the canonical quiet NaN pattern (callers
// compare NaN results with IsQuietNaNPattern instead of bitwise).
uint32_t ReferenceRound(const Format& f, float x) {
  const uint32_t sign = std::signbit(x) ? f.sign_bit() : 0u;
  if (std::isnan(x)) {
    return sign |
           (f.ieee_specials ? f.inf_bits() | (1u << (f.mantissa_bits - 1)) : f.sign_bit() - 1);
  }
  const ValueTable& t = TableFor(f);
  const double a = std::fabs(static_cast<double>(x));
  if (f.ieee_specials) {
    // Ties at the overflow midpoint go to Inf: max_finite's mantissa is all ones (odd).
    if (a >= (t.max_finite + t.next_step) / 2) return sign | f.inf_bits();
  } else {
    if (a >= t.max_finite) return sign | t.max_finite_bits;  // saturate, Inf included
  }
  const auto it =
      std::lower_bound(t.entries.begin(), t.entries.end(), std::make_pair(a, uint32_t{0}));
  if (it == t.entries.end()) return sign | t.max_finite_bits;  // in (max, overflow midpoint)
  if (it->first == a) return sign | it->second;
  const auto lo = std::prev(it);
  const double mid = (lo->first + it->first) / 2;  // exact: both have few significant bits
  uint32_t mag;
  if (a < mid) {
    mag = lo->second;
  } else if (a > mid) {
    mag = it->second;
  } else {
    mag = (lo->second & 1u) == 0 ? lo->second : it->second;
  }
  return sign | mag;
}

std::string Hex(uint32_t v) {
  char buf[16];
  std::snprintf(buf, sizeof(buf), "0x%X", v);
  return buf;
}

std::string Describe(float x) {
  char buf[64];
  std::snprintf(buf, sizeof(buf), "%.9g (f32 bits 0x%08X)", static_cast<double>(x),
                std::bit_cast<uint32_t>(x));
  return buf;
}

// Converts `x` and compares with the reference. Returns true on a match (so callers can cap the
// number of failures they print).
::testing::AssertionResult MatchesReference(const Format& f, float x) {
  const uint32_t got = f.encode(x);
  if (std::isnan(x)) {
    if (IsQuietNaNPattern(f, got)) return ::testing::AssertionSuccess();
    return ::testing::AssertionFailure() << f.name << ": NaN input " << Describe(x) << " gave "
                                         << Hex(got) << ", not a quiet NaN pattern";
  }
  const uint32_t want = ReferenceRound(f, x);
  if (got == want) return ::testing::AssertionSuccess();
  return ::testing::AssertionFailure()
         << f.name << ": input " << Describe(x) << " encoded to " << Hex(got) << " ("
         << ReferenceDecode(f, got) << "), reference says " << Hex(want) << " ("
         << ReferenceDecode(f, want) << ")";
}

// Checks every input and reports at most a few failures per call, with the total count.
void CheckInputs(const Format& f, const std::vector<float>& inputs) {
  int failures = 0;
  for (float x : inputs) {
    const ::testing::AssertionResult r = MatchesReference(f, x);
    if (!r && ++failures <= 10) ADD_FAILURE() << r.message();
  }
  EXPECT_EQ(failures, 0) << f.name << ": " << failures << " of " << inputs.size()
                         << " inputs disagree with the reference";
}

// A non-negative table value as f32; 2^128 (bf16's overflow step) is beyond f32 and becomes Inf.
float ToFloatChecked(double v) { return v >= 0x1p128 ? kInf : static_cast<float>(v); }

class FormatTest : public ::testing::TestWithParam<const Format*> {};

TEST_P(FormatTest, ReferenceTableHasExpectedShape) {
  const Format& f = *GetParam();
  const ValueTable& t = TableFor(f);
  // Smallest subnormal 2^(1 - bias - M); finite magnitudes are monotonic in their bit patterns.
  ASSERT_GE(t.entries.size(), 2u);
  EXPECT_EQ(t.entries[0].first, 0.0);
  EXPECT_EQ(t.entries[1].first, std::ldexp(1.0, 1 - f.bias() - f.mantissa_bits));
  for (size_t i = 0; i < t.entries.size(); ++i) EXPECT_EQ(t.entries[i].second, i);
  // The format's largest finite value: bf16 ~3.39e38, f16 65504, e4m3 448, e5m2 57344.
  const double expected_max = f.dtype == DType::kBF16     ? 0x1.FEp127
                              : f.dtype == DType::kF16    ? 65504.0
                              : f.dtype == DType::kF8E4M3 ? 448.0
                                                          : 57344.0;
  EXPECT_EQ(t.max_finite, expected_max);
}

TEST_P(FormatTest, EveryPatternDecodesAsReference) {
  const Format& f = *GetParam();
  int failures = 0;
  for (uint32_t b = 0; b < f.num_patterns(); ++b) {
    const float got = f.decode(b);
    const double want = ReferenceDecode(f, b);
    const bool ok = std::isnan(want) ? std::isnan(got)
                                     : static_cast<double>(got) == want &&
                                           std::signbit(got) == std::signbit(want);
    if (!ok && ++failures <= 10) {
      ADD_FAILURE() << f.name << ": pattern " << Hex(b) << " decoded to " << Describe(got)
                    << ", reference " << want;
    }
  }
  EXPECT_EQ(failures, 0);
}

TEST_P(FormatTest, EveryPatternRoundTrips) {
  const Format& f = *GetParam();
  int failures = 0;
  for (uint32_t b = 0; b < f.num_patterns(); ++b) {
    const float x = f.decode(b);
    const uint32_t back = f.encode(x);
    const bool ok = IsNaNPattern(f, b) ? std::isnan(x) && IsQuietNaNPattern(f, back) : back == b;
    if (!ok && ++failures <= 10) {
      ADD_FAILURE() << f.name << ": " << Hex(b) << " -> " << Describe(x) << " -> " << Hex(back);
    }
  }
  EXPECT_EQ(failures, 0);
}

// Midpoints between every pair of adjacent values (and between the largest finite value and the
// overflow step, for IEEE-like formats), the f32 neighbours of each midpoint, and the values.
TEST_P(FormatTest, RoundsAtEveryMidpointAndItsNeighbours) {
  const Format& f = *GetParam();
  const ValueTable& t = TableFor(f);
  std::vector<double> values;
  for (const auto& e : t.entries) values.push_back(e.first);
  if (f.ieee_specials) values.push_back(t.next_step);
  std::vector<float> inputs;
  inputs.reserve(values.size() * 10);
  for (size_t i = 0; i + 1 < values.size(); ++i) {
    const double mid = (values[i] + values[i + 1]) / 2;
    const float mid_f = static_cast<float>(mid);
    ASSERT_EQ(static_cast<double>(mid_f), mid) << f.name << ": midpoint not exact in f32";
    for (float s : {1.0f, -1.0f}) {
      inputs.push_back(s * mid_f);
      inputs.push_back(s * std::nextafter(mid_f, 0.0f));
      inputs.push_back(s * std::nextafter(mid_f, kInf));
      inputs.push_back(s * ToFloatChecked(values[i]));
      inputs.push_back(s * ToFloatChecked(values[i + 1]));
    }
  }
  CheckInputs(f, inputs);
}

TEST_P(FormatTest, RoundsSpecialCases) {
  const Format& f = *GetParam();
  const ValueTable& t = TableFor(f);
  const double smallest = t.entries[1].first;
  const float max_f = static_cast<float>(t.max_finite);
  std::vector<float> inputs = {
      0.0f,
      -0.0f,
      kInf,
      -kInf,
      kNaN,
      -kNaN,
      std::bit_cast<float>(0x7F800001u),  // signalling NaN
      std::bit_cast<float>(0xFFBFFFFFu),
      static_cast<float>(smallest),
      static_cast<float>(smallest / 2),  // tie between 0 and the smallest subnormal -> 0
      std::nextafter(static_cast<float>(smallest / 2), kInf),
      std::nextafter(static_cast<float>(smallest / 2), 0.0f),
      static_cast<float>(smallest * 1.5),  // tie between 1 and 2 smallest -> 2 (even)
      static_cast<float>(smallest * 2.5),  // tie -> 2 smallest (even)
      static_cast<float>(t.entries[(1u << f.mantissa_bits) - 1].first),  // largest subnormal
      static_cast<float>(t.entries[1u << f.mantissa_bits].first),        // smallest normal
      std::numeric_limits<float>::denorm_min(),  // f32 subnormals: 0 unless the format is bf16
      std::numeric_limits<float>::min() / 2,
      std::nextafter(std::numeric_limits<float>::min(), 0.0f),
      std::numeric_limits<float>::min(),
      max_f,
      std::nextafter(max_f, kInf),
      max_f * 1.0625f,
      max_f * 1.125f,
      max_f * 2.0f,
      std::numeric_limits<float>::max(),
      1.0f,
      1.0f / 3.0f,
      3.14159265f,
      1e-3f,
      -1e-5f,
  };
  if (f.ieee_specials) {
    const float overflow_mid = ToFloatChecked((t.max_finite + t.next_step) / 2);
    inputs.push_back(overflow_mid);
    inputs.push_back(std::nextafter(overflow_mid, 0.0f));
    inputs.push_back(std::nextafter(overflow_mid, kInf));
  }
  const size_t n = inputs.size();
  for (size_t i = 0; i < n; ++i) inputs.push_back(-inputs[i]);
  CheckInputs(f, inputs);
}

TEST_P(FormatTest, RoundsRandomF32BitPatterns) {
  const Format& f = *GetParam();
  std::mt19937 gen(20240611u + static_cast<uint32_t>(f.width() * 16 + f.mantissa_bits));
  std::vector<float> inputs(1000000);
  for (float& x : inputs) x = std::bit_cast<float>(static_cast<uint32_t>(gen()));
  CheckInputs(f, inputs);
}

TEST_P(FormatTest, ConvertBufferAndLoadAsF32RoundTrip) {
  const Format& f = *GetParam();
  const ValueTable& t = TableFor(f);
  // Representable values of both signs, plus inputs that need rounding and specials.
  std::vector<float> src;
  for (size_t i = 0; i < t.entries.size(); i += t.entries.size() / 37 + 1) {
    src.push_back(static_cast<float>(t.entries[i].first));
    src.push_back(-static_cast<float>(t.entries[i].first));
  }
  src.push_back(static_cast<float>(t.max_finite));
  src.insert(src.end(), {0.1f, -2.7182818f, 1e30f, -1e30f, kInf, -kInf, -0.0f});
  const int64_t n = static_cast<int64_t>(src.size());

  std::vector<unsigned char> narrow(src.size() * DTypeSize(f.dtype), 0xAB);
  ConvertBuffer(src.data(), DType::kF32, narrow.data(), f.dtype, n);
  std::vector<float> back(src.size(), kNaN);
  ConvertBuffer(narrow.data(), f.dtype, back.data(), DType::kF32, n);
  for (int64_t i = 0; i < n; ++i) {
    uint32_t stored = 0;
    std::memcpy(&stored, narrow.data() + i * DTypeSize(f.dtype), DTypeSize(f.dtype));
    // Little-endian host: the low DTypeSize bytes of `stored` are the element.
    EXPECT_EQ(stored, ReferenceRound(f, src[i]))
        << f.name << " element " << i << " " << Describe(src[i]);
    const double want = ReferenceDecode(f, stored);
    EXPECT_EQ(static_cast<double>(back[i]), want) << f.name << " element " << i;
    EXPECT_EQ(std::signbit(back[i]), std::signbit(want)) << f.name << " element " << i;
    const float loaded = LoadAsF32(narrow.data(), f.dtype, i);
    EXPECT_EQ(std::bit_cast<uint32_t>(loaded), std::bit_cast<uint32_t>(back[i]));
    // Values the format represents come back bit for bit (-0.0 and Inf included).
    if (static_cast<double>(src[i]) == ReferenceDecode(f, ReferenceRound(f, src[i]))) {
      EXPECT_EQ(std::bit_cast<uint32_t>(back[i]), std::bit_cast<uint32_t>(src[i]))
          << f.name << " element " << i << " " << Describe(src[i]);
    }
  }
}

INSTANTIATE_TEST_SUITE_P(AllNarrowFormats, FormatTest, ::testing::ValuesIn(kAllFormats),
                         [](const ::testing::TestParamInfo<const Format*>& info) {
                           return std::string(info.param->name);
                         });

// Hand-checked values, independent of both the code under test and the reference above.
TEST(DTypeLiteralTest, KnownEncodings) {
  EXPECT_EQ(F32ToBF16(1.0f), 0x3F80);
  EXPECT_EQ(F32ToBF16(-2.0f), 0xC000);
  EXPECT_EQ(F32ToBF16(-0.0f), 0x8000);
  EXPECT_EQ(F32ToBF16(std::bit_cast<float>(0x3F808000u)), 0x3F80);  // tie, 0x3F80 even
  EXPECT_EQ(F32ToBF16(std::bit_cast<float>(0x3F818000u)), 0x3F82);  // tie, 0x3F82 even
  EXPECT_EQ(F32ToBF16(std::bit_cast<float>(0x3F808001u)), 0x3F81);
  EXPECT_EQ(F32ToBF16(std::bit_cast<float>(0x7F7F7FFFu)), 0x7F7F);  // below overflow midpoint
  EXPECT_EQ(F32ToBF16(std::bit_cast<float>(0x7F7F8000u)), 0x7F80);  // at it: Inf
  EXPECT_EQ(F32ToBF16(std::numeric_limits<float>::max()), 0x7F80);
  EXPECT_EQ(F32ToBF16(-kInf), 0xFF80);
  EXPECT_EQ(F32ToBF16(std::numeric_limits<float>::denorm_min()), 0x0000);  // 2^-149: tie -> 0
  EXPECT_EQ(F32ToBF16(std::bit_cast<float>(0x00010000u)), 0x0001);         // bf16 subnormal

  EXPECT_EQ(F32ToF16(1.0f), 0x3C00);
  EXPECT_EQ(F32ToF16(-2.0f), 0xC000);
  EXPECT_EQ(F32ToF16(-0.0f), 0x8000);
  EXPECT_EQ(F32ToF16(65504.0f), 0x7BFF);
  EXPECT_EQ(F32ToF16(65519.996f), 0x7BFF);
  EXPECT_EQ(F32ToF16(65520.0f), 0x7C00);
  EXPECT_EQ(F32ToF16(-1e9f), 0xFC00);
  EXPECT_EQ(F32ToF16(0x1p-24f), 0x0001);
  EXPECT_EQ(F32ToF16(0x1p-25f), 0x0000);
  EXPECT_EQ(F32ToF16(-0x1p-25f), 0x8000);
  EXPECT_EQ(F32ToF16(0x1.000002p-25f), 0x0001);
  EXPECT_EQ(F32ToF16(0x1.8p-24f), 0x0002);
  EXPECT_EQ(F32ToF16(1.0f + 0x1p-11f), 0x3C00);
  EXPECT_EQ(F32ToF16(1.0f + 0x3p-11f), 0x3C02);
  EXPECT_EQ(F32ToF16(0x1.ffcp-15f), 0x0400);  // rounds up into the smallest normal
  EXPECT_EQ(F32ToF16(std::numeric_limits<float>::denorm_min()), 0x0000);
  EXPECT_EQ(F16ToF32(0x7BFF), 65504.0f);
  EXPECT_EQ(F16ToF32(0x0001), 0x1p-24f);
  EXPECT_EQ(F16ToF32(0x3555), 0x1.554p-2f);

  EXPECT_EQ(F32ToF8E4M3(1.0f), 0x38);
  EXPECT_EQ(F32ToF8E4M3(-1.0f), 0xB8);
  EXPECT_EQ(F32ToF8E4M3(448.0f), 0x7E);
  EXPECT_EQ(F32ToF8E4M3(464.0f), 0x7E);
  EXPECT_EQ(F32ToF8E4M3(480.0f), 0x7E);
  EXPECT_EQ(F32ToF8E4M3(1e6f), 0x7E);
  EXPECT_EQ(F32ToF8E4M3(kInf), 0x7E);
  EXPECT_EQ(F32ToF8E4M3(-kInf), 0xFE);
  EXPECT_EQ(F32ToF8E4M3(kNaN) & 0x7F, 0x7F);
  EXPECT_EQ(F32ToF8E4M3(0x1p-9f), 0x01);
  EXPECT_EQ(F32ToF8E4M3(0x1p-10f), 0x00);
  EXPECT_EQ(F32ToF8E4M3(-0.0f), 0x80);
  EXPECT_EQ(F8E4M3ToF32(0x7E), 448.0f);
  EXPECT_EQ(F8E4M3ToF32(0x78), 256.0f);  // exponent 15 is finite in e4m3fn
  EXPECT_EQ(F8E4M3ToF32(0x01), 0x1p-9f);
  EXPECT_TRUE(std::isnan(F8E4M3ToF32(0x7F)));
  EXPECT_TRUE(std::isnan(F8E4M3ToF32(0xFF)));

  EXPECT_EQ(F32ToF8E5M2(1.0f), 0x3C);
  EXPECT_EQ(F32ToF8E5M2(57344.0f), 0x7B);
  EXPECT_EQ(F32ToF8E5M2(61439.996f), 0x7B);
  EXPECT_EQ(F32ToF8E5M2(61440.0f), 0x7C);
  EXPECT_EQ(F32ToF8E5M2(-kInf), 0xFC);
  EXPECT_EQ(F32ToF8E5M2(0x1p-16f), 0x01);
  EXPECT_EQ(F32ToF8E5M2(0x1p-17f), 0x00);
  EXPECT_EQ(F8E5M2ToF32(0x7C), kInf);
  EXPECT_EQ(F8E5M2ToF32(0xFC), -kInf);
  EXPECT_TRUE(std::isnan(F8E5M2ToF32(0x7D)));
}

TEST(DTypeTableTest, SizeNameAndKind) {
  struct Row {
    DType dtype;
    size_t size;
    const char* name;
    bool floating;
  };
  const Row rows[] = {
      {DType::kF32, 4, "f32", true},       {DType::kBF16, 2, "bf16", true},
      {DType::kF16, 2, "f16", true},       {DType::kF8E4M3, 1, "f8e4m3", true},
      {DType::kF8E5M2, 1, "f8e5m2", true}, {DType::kI32, 4, "i32", false},
      {DType::kI64, 8, "i64", false},
  };
  for (const Row& r : rows) {
    EXPECT_EQ(DTypeSize(r.dtype), r.size) << r.name;
    EXPECT_EQ(DTypeName(r.dtype), r.name);
    EXPECT_EQ(IsFloatingPoint(r.dtype), r.floating) << r.name;
    std::ostringstream os;
    os << r.dtype;
    EXPECT_EQ(os.str(), r.name);
  }
  EXPECT_EQ(DTypeOf<float>::value, DType::kF32);
  EXPECT_EQ(DTypeOf<BF16>::value, DType::kBF16);
  EXPECT_EQ(DTypeOf<F16>::value, DType::kF16);
  EXPECT_EQ(DTypeOf<F8E4M3>::value, DType::kF8E4M3);
  EXPECT_EQ(DTypeOf<F8E5M2>::value, DType::kF8E5M2);
  EXPECT_EQ(DTypeOf<int32_t>::value, DType::kI32);
  EXPECT_EQ(DTypeOf<int64_t>::value, DType::kI64);
  EXPECT_EQ(sizeof(BF16), 2u);
  EXPECT_EQ(sizeof(F16), 2u);
  EXPECT_EQ(sizeof(F8E4M3), 1u);
  EXPECT_EQ(sizeof(F8E5M2), 1u);
}

// The bulk paths (F16C on x86 where present) agree bit for bit with the scalar conversions: every
// f16 pattern widened, and f32 patterns across the whole range (subnormals, NaNs with payloads,
// Inf, values that round to even or overflow) narrowed and round-tripped.
TEST(ConvertBufferTest, BulkF16MatchesTheScalarConversions) {
  std::vector<uint16_t> all(1 << 16);
  for (uint32_t b = 0; b < all.size(); ++b) all[b] = static_cast<uint16_t>(b);
  std::vector<float> wide(all.size());
  ConvertBuffer(all.data(), DType::kF16, wide.data(), DType::kF32,
                static_cast<int64_t>(all.size()));
  for (uint32_t b = 0; b < all.size(); ++b) {
    ASSERT_EQ(std::bit_cast<uint32_t>(wide[b]), std::bit_cast<uint32_t>(F16ToF32(all[b])))
        << "f16 bits " << b;
  }
  std::vector<float> src;
  for (uint64_t b = 0; b <= 0xFFFFFFFFull; b += 0x10001ull * 37) {
    src.push_back(std::bit_cast<float>(static_cast<uint32_t>(b)));
  }
  src.insert(src.end(), {65504.0f, 65520.0f, 65519.99f, 5.96e-8f, 2.98e-8f, -0.0f, kNaN, -kInf});
  const int64_t n = static_cast<int64_t>(src.size());
  std::vector<uint16_t> narrow(src.size());
  ConvertBuffer(src.data(), DType::kF32, narrow.data(), DType::kF16, n);
  std::vector<float> rounded = src;
  RoundToDType(rounded.data(), n, DType::kF16);
  for (int64_t i = 0; i < n; ++i) {
    ASSERT_EQ(narrow[i], F32ToF16(src[i])) << "f32 bits " << std::bit_cast<uint32_t>(src[i]);
    ASSERT_EQ(std::bit_cast<uint32_t>(rounded[i]),
              std::bit_cast<uint32_t>(F16ToF32(F32ToF16(src[i]))))
        << "f32 bits " << std::bit_cast<uint32_t>(src[i]);
  }
}

TEST(ConvertBufferTest, F32ToF32Copies) {
  const std::vector<float> src = {1.5f, -0.0f, kInf, 0x1p-149f, -3.25f};
  std::vector<float> dst(src.size(), 0.0f);
  ConvertBuffer(src.data(), DType::kF32, dst.data(), DType::kF32, static_cast<int64_t>(src.size()));
  for (size_t i = 0; i < src.size(); ++i) {
    EXPECT_EQ(std::bit_cast<uint32_t>(dst[i]), std::bit_cast<uint32_t>(src[i]));
    EXPECT_EQ(std::bit_cast<uint32_t>(LoadAsF32(src.data(), DType::kF32, static_cast<int64_t>(i))),
              std::bit_cast<uint32_t>(src[i]));
  }
}

TEST(ConvertBufferDeathTest, RejectsNarrowToNarrowAndIntegers) {
  const uint16_t src[2] = {0x3C00, 0x4000};
  uint16_t dst[2] = {0, 0};
  EXPECT_DEATH(ConvertBuffer(src, DType::kF16, dst, DType::kBF16, 2), "one side must be f32");
  const int32_t ints[1] = {7};
  EXPECT_DEATH(LoadAsF32(ints, DType::kI32, 0), "not a floating dtype");
}

}  // namespace
}  // namespace loom::runtime
