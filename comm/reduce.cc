#include "comm/reduce.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "runtime/base/check.h"

namespace loom::comm {

using runtime::DType;

namespace {

constexpr int64_t kBlock = 2048;  // elements per pass: the accumulator stays in L1

template <typename T, typename Acc>
void Combine(ReduceOp op, Acc* acc, const T* in, int64_t n) {
  switch (op) {
    case ReduceOp::kSum:
    case ReduceOp::kAvg:
      for (int64_t i = 0; i < n; ++i) acc[i] += static_cast<Acc>(in[i]);
      return;
    case ReduceOp::kMax:
      for (int64_t i = 0; i < n; ++i) acc[i] = std::max(acc[i], static_cast<Acc>(in[i]));
      return;
    case ReduceOp::kMin:
      for (int64_t i = 0; i < n; ++i) acc[i] = std::min(acc[i], static_cast<Acc>(in[i]));
      return;
  }
}

// Same-type reduction straight into out (f32, i32, i64).
template <typename T>
void ReduceNative(ReduceOp op, const void* const* inputs, int k, void* out_raw, int64_t n,
                  int divisor) {
  T* out = static_cast<T*>(out_raw);
  for (int64_t b = 0; b < n; b += kBlock) {
    const int64_t len = std::min(kBlock, n - b);
    const T* first = static_cast<const T*>(inputs[0]) + b;
    if (out + b != first) std::copy_n(first, len, out + b);
    for (int j = 1; j < k; ++j)
      Combine<T, T>(op, out + b, static_cast<const T*>(inputs[j]) + b, len);
    if (op == ReduceOp::kAvg) {
      for (int64_t i = 0; i < len; ++i) out[b + i] /= static_cast<T>(divisor);
    }
  }
}

// 16-bit floats: widen each block to f32, accumulate, round once.
void ReduceHalf(DType dtype, ReduceOp op, const void* const* inputs, int k, void* out, int64_t n,
                int divisor) {
  float acc[kBlock];
  float tmp[kBlock];
  const size_t es = runtime::DTypeSize(dtype);
  for (int64_t b = 0; b < n; b += kBlock) {
    const int64_t len = std::min(kBlock, n - b);
    runtime::ConvertBuffer(static_cast<const char*>(inputs[0]) + b * es, dtype, acc, DType::kF32,
                           len);
    for (int j = 1; j < k; ++j) {
      runtime::ConvertBuffer(static_cast<const char*>(inputs[j]) + b * es, dtype, tmp, DType::kF32,
                             len);
      Combine<float, float>(op, acc, tmp, len);
    }
    if (op == ReduceOp::kAvg) {
      for (int64_t i = 0; i < len; ++i) acc[i] /= static_cast<float>(divisor);
    }
    runtime::ConvertBuffer(acc, DType::kF32, static_cast<char*>(out) + b * es, dtype, len);
  }
}

}  // namespace

bool IsCommDType(DType dtype) {
  return dtype == DType::kF32 || dtype == DType::kBF16 || dtype == DType::kF16 ||
         dtype == DType::kI32 || dtype == DType::kI64;
}

absl::Status CheckReducible(DType dtype, ReduceOp op) {
  if (!IsCommDType(dtype)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "collectives carry f32, bf16, f16, i32 and i64, not ", runtime::DTypeName(dtype)));
  }
  if (op == ReduceOp::kAvg && !runtime::IsFloatingPoint(dtype)) {
    return absl::InvalidArgumentError(absl::StrCat("avg is defined for floating dtypes only, not ",
                                                   runtime::DTypeName(dtype),
                                                   "; reduce with sum and divide"));
  }
  return absl::OkStatus();
}

void ReduceBuffers(DType dtype, ReduceOp op, const void* const* inputs, int num_inputs, void* out,
                   int64_t n, int avg_divisor) {
  LOOM_CHECK_GE(num_inputs, 1) << "ReduceBuffers needs an input";
  switch (dtype) {
    case DType::kF32:
      return ReduceNative<float>(op, inputs, num_inputs, out, n, avg_divisor);
    case DType::kI32:
      return ReduceNative<int32_t>(op, inputs, num_inputs, out, n, avg_divisor);
    case DType::kI64:
      return ReduceNative<int64_t>(op, inputs, num_inputs, out, n, avg_divisor);
    case DType::kBF16:
    case DType::kF16:
      return ReduceHalf(dtype, op, inputs, num_inputs, out, n, avg_divisor);
    default:
      LOOM_CHECK(false) << "ReduceBuffers: unsupported dtype " << dtype;
  }
}

}  // namespace loom::comm
