#include "runtime/dtype.h"

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstring>

#include "runtime/base/check.h"
#include "runtime/bf16_bits.h"
#include "runtime/vectorize.h"

#if defined(__x86_64__)
#include <immintrin.h>
#endif

namespace loom::runtime {
namespace {

// A narrow binary floating-point format: exponent bits, mantissa bits (bias 2^(E-1)-1).
struct Format {
  int exponent_bits;
  int mantissa_bits;
  int bias() const { return (1 << (exponent_bits - 1)) - 1; }
};

constexpr Format kF16Format{5, 10};
constexpr Format kE4M3Format{4, 3};
constexpr Format kE5M2Format{5, 2};

// Rounds |x| (finite, not NaN, given by its f32 bits without the sign) to the format with
// round-to-nearest-even, assuming an unbounded exponent above. Returns the magnitude's bit pattern;
// a result beyond the format's largest finite value is left for the caller to saturate or turn
// into Inf. Handles subnormal results; f32 subnormals are far below every target's range.
uint32_t RoundMagnitude(uint32_t abs_bits, Format f) {
  const int exp32 = static_cast<int>(abs_bits >> 23);
  if (exp32 == 0) return 0;
  const uint32_t sig = (1u << 23) | (abs_bits & 0x7FFFFFu);  // 24-bit significand
  const int e = exp32 - 127;                                 // unbiased exponent
  const int emin = 1 - f.bias();
  int shift;      // bits of `sig` dropped by rounding
  uint32_t base;  // exponent field already placed, for normal results
  if (e >= emin) {
    shift = 23 - f.mantissa_bits;
    base = static_cast<uint32_t>(e + f.bias()) << f.mantissa_bits;
    // Drop the implicit bit: the exponent field carries it.
    const uint32_t kept = (sig & 0x7FFFFFu) >> shift;
    const uint32_t rem = sig & ((1u << shift) - 1);
    const uint32_t half = 1u << (shift - 1);
    uint32_t out = base + kept;
    if (rem > half || (rem == half && (kept & 1u))) ++out;  // a carry bumps the exponent: correct
    return out;
  }
  shift = 23 - f.mantissa_bits + (emin - e);
  if (shift > 24) return 0;  // below half the smallest subnormal
  const uint32_t kept = sig >> shift;
  const uint32_t rem = sig & ((1u << shift) - 1);
  const uint32_t half = 1u << (shift - 1);
  uint32_t out = kept;
  if (rem > half || (rem == half && (kept & 1u))) ++out;  // may carry into the smallest normal
  return out;
}

// Decodes a narrow float's finite magnitude bits (exponent field not all ones unless the format
// uses it for finite values).
float DecodeMagnitude(uint32_t mag, Format f) {
  const uint32_t exp_field = mag >> f.mantissa_bits;
  const uint32_t mant = mag & ((1u << f.mantissa_bits) - 1);
  if (exp_field == 0) {
    return std::ldexp(static_cast<float>(mant), 1 - f.bias() - f.mantissa_bits);
  }
  const uint32_t bits = ((exp_field - f.bias() + 127) << 23) | (mant << (23 - f.mantissa_bits));
  return std::bit_cast<float>(bits);
}

float WithSign(float v, bool negative) { return negative ? -v : v; }

}  // namespace

size_t DTypeSize(DType dtype) {
  switch (dtype) {
    case DType::kF32:
    case DType::kI32:
      return 4;
    case DType::kBF16:
    case DType::kF16:
      return 2;
    case DType::kF8E4M3:
    case DType::kF8E5M2:
      return 1;
    case DType::kI64:
      return 8;
  }
  LOOM_CHECK(false) << "unknown dtype " << static_cast<int>(dtype);
}

absl::string_view DTypeName(DType dtype) {
  switch (dtype) {
    case DType::kF32:
      return "f32";
    case DType::kBF16:
      return "bf16";
    case DType::kF16:
      return "f16";
    case DType::kF8E4M3:
      return "f8e4m3";
    case DType::kF8E5M2:
      return "f8e5m2";
    case DType::kI32:
      return "i32";
    case DType::kI64:
      return "i64";
  }
  return "unknown";
}

bool IsFloatingPoint(DType dtype) { return dtype != DType::kI32 && dtype != DType::kI64; }

std::ostream& operator<<(std::ostream& os, DType dtype) { return os << DTypeName(dtype); }

uint16_t F32ToBF16(float x) { return F32BitsToBF16(std::bit_cast<uint32_t>(x)); }

float BF16ToF32(uint16_t bits) { return BF16BitsToF32(bits); }

uint16_t F32ToF16(float x) {
  const uint32_t bits = std::bit_cast<uint32_t>(x);
  const uint16_t sign = static_cast<uint16_t>((bits >> 16) & 0x8000u);
  const uint32_t abs_bits = bits & 0x7FFFFFFFu;
  if (abs_bits > 0x7F800000u) return sign | 0x7E00u;  // NaN
  if (abs_bits == 0x7F800000u) return sign | 0x7C00u;
  const uint32_t mag = RoundMagnitude(abs_bits, kF16Format);
  return sign | static_cast<uint16_t>(mag >= 0x7C00u ? 0x7C00u : mag);
}

float F16ToF32(uint16_t bits) {
  const bool negative = bits & 0x8000u;
  const uint32_t mag = bits & 0x7FFFu;
  if ((mag >> 10) == 0x1Fu) {
    return (mag & 0x3FFu) ? std::bit_cast<float>((negative ? 0xFFC00000u : 0x7FC00000u) |
                                                 ((mag & 0x3FFu) << 13))
                          : WithSign(INFINITY, negative);
  }
  return WithSign(DecodeMagnitude(mag, kF16Format), negative);
}

uint8_t F32ToF8E4M3(float x) {
  const uint32_t bits = std::bit_cast<uint32_t>(x);
  const uint8_t sign = static_cast<uint8_t>((bits >> 24) & 0x80u);
  const uint32_t abs_bits = bits & 0x7FFFFFFFu;
  if (abs_bits > 0x7F800000u) return sign | 0x7Fu;   // the format's only NaN
  if (abs_bits == 0x7F800000u) return sign | 0x7Eu;  // saturate Inf to ±448
  const uint32_t mag = RoundMagnitude(abs_bits, kE4M3Format);
  return sign | static_cast<uint8_t>(mag > 0x7Eu ? 0x7Eu : mag);
}

float F8E4M3ToF32(uint8_t bits) {
  const bool negative = bits & 0x80u;
  const uint32_t mag = bits & 0x7Fu;
  if (mag == 0x7Fu) return std::bit_cast<float>(negative ? 0xFFC00000u : 0x7FC00000u);
  return WithSign(DecodeMagnitude(mag, kE4M3Format), negative);
}

uint8_t F32ToF8E5M2(float x) {
  const uint32_t bits = std::bit_cast<uint32_t>(x);
  const uint8_t sign = static_cast<uint8_t>((bits >> 24) & 0x80u);
  const uint32_t abs_bits = bits & 0x7FFFFFFFu;
  if (abs_bits > 0x7F800000u) return sign | 0x7Eu;  // quiet NaN
  if (abs_bits == 0x7F800000u) return sign | 0x7Cu;
  const uint32_t mag = RoundMagnitude(abs_bits, kE5M2Format);
  return sign | static_cast<uint8_t>(mag >= 0x7Cu ? 0x7Cu : mag);
}

float F8E5M2ToF32(uint8_t bits) {
  const bool negative = bits & 0x80u;
  const uint32_t mag = bits & 0x7Fu;
  if ((mag >> 2) == 0x1Fu) {
    return (mag & 0x3u) ? std::bit_cast<float>(negative ? 0xFFC00000u : 0x7FC00000u)
                        : WithSign(INFINITY, negative);
  }
  return WithSign(DecodeMagnitude(mag, kE5M2Format), negative);
}

float LoadAsF32(const void* data, DType dtype, int64_t i) {
  switch (dtype) {
    case DType::kF32:
      return static_cast<const float*>(data)[i];
    case DType::kBF16:
      return BF16ToF32(static_cast<const uint16_t*>(data)[i]);
    case DType::kF16:
      return F16ToF32(static_cast<const uint16_t*>(data)[i]);
    case DType::kF8E4M3:
      return F8E4M3ToF32(static_cast<const uint8_t*>(data)[i]);
    case DType::kF8E5M2:
      return F8E5M2ToF32(static_cast<const uint8_t*>(data)[i]);
    default:
      LOOM_CHECK(false) << "LoadAsF32: " << dtype << " is not a floating dtype";
  }
}

namespace {

void StoreFromF32(float v, void* data, DType dtype, int64_t i) {
  switch (dtype) {
    case DType::kF32:
      static_cast<float*>(data)[i] = v;
      return;
    case DType::kBF16:
      static_cast<uint16_t*>(data)[i] = F32ToBF16(v);
      return;
    case DType::kF16:
      static_cast<uint16_t*>(data)[i] = F32ToF16(v);
      return;
    case DType::kF8E4M3:
      static_cast<uint8_t*>(data)[i] = F32ToF8E4M3(v);
      return;
    case DType::kF8E5M2:
      static_cast<uint8_t*>(data)[i] = F32ToF8E5M2(v);
      return;
    default:
      LOOM_CHECK(false) << "StoreFromF32: " << dtype << " is not a floating dtype";
  }
}

}  // namespace

namespace {

// f16 <-> f32 in bulk with the F16C instructions where the CPU has them (checked once): bit for
// bit what F32ToF16 / F16ToF32 give — the hardware rounds to nearest even with subnormals and
// overflow to Inf, and quiets NaNs keeping the payload on the way up; on the way down NaN lanes
// are redone by F32ToF16, which makes every NaN the canonical quiet one. Callers check HasF16C().
#if defined(__x86_64__)
__attribute__((target("avx,f16c"))) void F32ToF16Bulk(const float* s, uint16_t* d, int64_t n) {
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    const __m256 v = _mm256_loadu_ps(s + i);
    _mm_storeu_si128(reinterpret_cast<__m128i*>(d + i),
                     _mm256_cvtps_ph(v, _MM_FROUND_TO_NEAREST_INT));
    const int nan = _mm256_movemask_ps(_mm256_cmp_ps(v, v, _CMP_UNORD_Q));
    for (int k = 0; nan != 0 && k < 8; ++k) {
      if ((nan >> k) & 1) d[i + k] = F32ToF16(s[i + k]);
    }
  }
  for (; i < n; ++i) d[i] = F32ToF16(s[i]);
}

__attribute__((target("avx,f16c"))) void F16ToF32Bulk(const uint16_t* s, float* d, int64_t n) {
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    _mm256_storeu_ps(d + i,
                     _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(s + i))));
  }
  for (; i < n; ++i) d[i] = F16ToF32(s[i]);
}

bool HasF16C() {
  static const bool has = __builtin_cpu_supports("avx") && __builtin_cpu_supports("f16c");
  return has;
}
#else
void F32ToF16Bulk(const float*, uint16_t*, int64_t) {}
void F16ToF32Bulk(const uint16_t*, float*, int64_t) {}
bool HasF16C() { return false; }
#endif

}  // namespace

namespace {

// The bf16 bulk loops, compiled per instruction set (runtime/vectorize.h): mixed precision converts
// whole activations, working weights and gradient buckets every step.
LOOM_VECTORIZED void F32ToBF16Span(const float* s, uint16_t* d, int64_t n) {
  for (int64_t i = 0; i < n; ++i) d[i] = F32ToBF16(s[i]);
}
LOOM_VECTORIZED void BF16ToF32Span(const uint16_t* s, float* d, int64_t n) {
  for (int64_t i = 0; i < n; ++i) d[i] = BF16ToF32(s[i]);
}
LOOM_VECTORIZED void RoundToBF16Span(float* data, int64_t n) {
  for (int64_t i = 0; i < n; ++i) data[i] = BF16ToF32(F32ToBF16(data[i]));
}

}  // namespace

void ConvertBuffer(const void* src, DType src_dtype, void* dst, DType dst_dtype, int64_t n) {
  LOOM_CHECK(src_dtype == DType::kF32 || dst_dtype == DType::kF32)
      << "ConvertBuffer: one side must be f32, got " << src_dtype << " -> " << dst_dtype;
  if (src_dtype == DType::kF32 && dst_dtype == DType::kF32) {
    if (n > 0)
      std::memcpy(dst, src, static_cast<size_t>(n) * sizeof(float));  // n 0: dst may be null
    return;
  }
  if (src_dtype == DType::kF32) {
    const float* s = static_cast<const float*>(src);
    uint16_t* d16 = static_cast<uint16_t*>(dst);
    // The 16-bit types in tight loops (mixed precision converts whole activations and buckets).
    if (dst_dtype == DType::kBF16) {
      F32ToBF16Span(s, d16, n);
    } else if (dst_dtype == DType::kF16 && HasF16C()) {
      F32ToF16Bulk(s, d16, n);
    } else if (dst_dtype == DType::kF16) {
      for (int64_t i = 0; i < n; ++i) d16[i] = F32ToF16(s[i]);
    } else {
      for (int64_t i = 0; i < n; ++i) StoreFromF32(s[i], dst, dst_dtype, i);
    }
    return;
  }
  float* d = static_cast<float*>(dst);
  const uint16_t* s16 = static_cast<const uint16_t*>(src);
  if (src_dtype == DType::kBF16) {
    BF16ToF32Span(s16, d, n);
  } else if (src_dtype == DType::kF16 && HasF16C()) {
    F16ToF32Bulk(s16, d, n);
  } else if (src_dtype == DType::kF16) {
    for (int64_t i = 0; i < n; ++i) d[i] = F16ToF32(s16[i]);
  } else {
    for (int64_t i = 0; i < n; ++i) d[i] = LoadAsF32(src, src_dtype, i);
  }
}

void RoundToDType(float* data, int64_t n, DType dtype) {
  LOOM_CHECK(IsFloatingPoint(dtype)) << "RoundToDType: " << dtype << " is not a floating type";
  switch (dtype) {
    case DType::kF32:
      return;
    case DType::kBF16:
      RoundToBF16Span(data, n);
      return;
    case DType::kF16:
      if (HasF16C()) {
        uint16_t narrow[1024];
        for (int64_t i = 0; i < n; i += 1024) {
          const int64_t m = std::min<int64_t>(1024, n - i);
          F32ToF16Bulk(data + i, narrow, m);
          F16ToF32Bulk(narrow, data + i, m);
        }
        return;
      }
      for (int64_t i = 0; i < n; ++i) data[i] = F16ToF32(F32ToF16(data[i]));
      return;
    default:
      for (int64_t i = 0; i < n; ++i) {
        uint8_t bits = 0;
        StoreFromF32(data[i], &bits, dtype, 0);
        data[i] = LoadAsF32(&bits, dtype, 0);
      }
  }
}

}  // namespace loom::runtime
