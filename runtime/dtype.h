// Element types and conversions between f32 and the narrow floating-point formats.
//
//   uint16_t h = loom::runtime::F32ToBF16(3.14159f);    // round to nearest even
//   float back = loom::runtime::BF16ToF32(h);             // exact
//   ConvertBuffer(src_f32, DType::kF32, dst_e4m3, DType::kF8E4M3, n);
//
// Rounding is round-to-nearest-even in every format. Special values:
//   bf16, f16, fp8 e5m2: IEEE-like. Overflow rounds to ±Inf, Inf stays Inf, NaN becomes a quiet
//   NaN. fp8 e4m3 (the "fn" variant: no Inf, one NaN pattern 0x7F/0xFF, max ±448): saturating —
//   finite
//     overflow and ±Inf become ±448, NaN becomes NaN (as CUDA's __NV_SATFINITE conversion does).
#pragma once

#include <cstddef>
#include <cstdint>
#include <ostream>

#include "absl/strings/string_view.h"

namespace loom::runtime {

enum class DType : uint8_t { kF32, kBF16, kF16, kF8E4M3, kF8E5M2, kI32, kI64 };

// Storage types so that Tensor::data<T>() is type-checked; each holds the raw bits.
struct BF16 {
  uint16_t bits;
};
struct F16 {
  uint16_t bits;
};
struct F8E4M3 {
  uint8_t bits;
};
struct F8E5M2 {
  uint8_t bits;
};

size_t DTypeSize(DType dtype);
absl::string_view DTypeName(DType dtype);  // "f32", "bf16", "f16", "f8e4m3", "f8e5m2", "i32", "i64"
bool IsFloatingPoint(DType dtype);
std::ostream& operator<<(std::ostream& os, DType dtype);

// Maps a C++ element type to its DType.
template <typename T>
struct DTypeOf;
template <>
struct DTypeOf<float> {
  static constexpr DType value = DType::kF32;
};
template <>
struct DTypeOf<BF16> {
  static constexpr DType value = DType::kBF16;
};
template <>
struct DTypeOf<F16> {
  static constexpr DType value = DType::kF16;
};
template <>
struct DTypeOf<F8E4M3> {
  static constexpr DType value = DType::kF8E4M3;
};
template <>
struct DTypeOf<F8E5M2> {
  static constexpr DType value = DType::kF8E5M2;
};
template <>
struct DTypeOf<int32_t> {
  static constexpr DType value = DType::kI32;
};
template <>
struct DTypeOf<int64_t> {
  static constexpr DType value = DType::kI64;
};

uint16_t F32ToBF16(float x);
float BF16ToF32(uint16_t bits);
uint16_t F32ToF16(float x);
float F16ToF32(uint16_t bits);
uint8_t F32ToF8E4M3(float x);
float F8E4M3ToF32(uint8_t bits);
uint8_t F32ToF8E5M2(float x);
float F8E5M2ToF32(uint8_t bits);

// Converts n elements between f32 and any floating dtype (either side may be f32; both f32 copies).
// Host memory; the buffers must not overlap.
void ConvertBuffer(const void* src, DType src_dtype, void* dst, DType dst_dtype, int64_t n);

// Replaces each of n f32 values by the nearest value of the floating `dtype` (round to nearest
// even, overflow to ±Inf as the conversions above), still as f32: what storing in `dtype` and
// loading back gives. A no-op for f32.
void RoundToDType(float* data, int64_t n, DType dtype);

// Element i of a floating buffer of `dtype`, as f32.
float LoadAsF32(const void* data, DType dtype, int64_t i);

}  // namespace loom::runtime
