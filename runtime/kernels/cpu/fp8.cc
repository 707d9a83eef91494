// FP8 quantization and GEMM on the CPU (runtime/kernels/fp8.h): the reference the CUDA twins are
// checked against.
#include "runtime/kernels/fp8.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

#include "runtime/kernels/cpu/cpu_kernels.h"
#include "runtime/kernels/matmul.h"

namespace loom::runtime::kernels::cpu {

namespace {

// The scale of each element of x [rows, cols]: the scales tensor's index for (r, c).
int64_t ScaleIndex(Fp8Blocks blocks, int64_t rows, int64_t ld, int64_t r, int64_t c) {
  switch (blocks) {
    case Fp8Blocks::kTensor:
      return 0;
    case Fp8Blocks::k1x128:
      return (c / kFp8Block) * rows + r;
    case Fp8Blocks::k128x128:
      return (r / kFp8Block) * ld + c / kFp8Block;
  }
  return 0;
}

// x as f32, whatever its dtype (f32 or bf16).
std::vector<float> AsF32(const Tensor& x) {
  std::vector<float> v(static_cast<size_t>(x.numel()));
  ConvertBuffer(x.raw_data(), x.dtype(), v.data(), DType::kF32, x.numel());
  return v;
}

}  // namespace

void QuantizeFp8(const Tensor& x, Fp8Blocks blocks, Tensor& q, Tensor& scales) {
  const int64_t rows = x.dim(0), cols = x.dim(1), ld = scales.dim(-1);
  const std::vector<float> v = AsF32(x);
  // Each block's largest magnitude (NaNs ignored; -1: the 128x128 layout's padding), then its
  // scale (the padding 0).
  std::vector<float> amax(static_cast<size_t>(scales.numel()), -1.0f);
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t c = 0; c < cols; ++c) {
      float& m = amax[ScaleIndex(blocks, rows, ld, r, c)];
      m = std::max(m, std::fabs(v[r * cols + c]));
    }
  }
  float* s = scales.data<float>();
  for (int64_t i = 0; i < scales.numel(); ++i) s[i] = amax[i] < 0.0f ? 0.0f : Fp8Scale(amax[i]);
  std::vector<float> scaled(v.size());
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t c = 0; c < cols; ++c) {
      scaled[r * cols + c] = v[r * cols + c] / s[ScaleIndex(blocks, rows, ld, r, c)];
    }
  }
  ConvertBuffer(scaled.data(), DType::kF32, q.raw_data(), DType::kF8E4M3, q.numel());
}

void Fp8Matmul(const Tensor& a, const Tensor& scale_a, Fp8Blocks a_blocks, const Tensor& b,
               const Tensor& scale_b, Fp8Blocks b_blocks, Tensor& out) {
  // Dequantized operands, then the f32 GEMM: out = a · bᵀ.
  auto dequantize = [](const Tensor& x, const Tensor& scales, Fp8Blocks blocks) {
    const int64_t rows = x.dim(0), cols = x.dim(1), ld = scales.dim(-1);
    Tensor f = Tensor::Empty(x.shape(), DType::kF32, MemoryTag::kWorkspace);
    ConvertBuffer(x.raw_data(), DType::kF8E4M3, f.raw_data(), DType::kF32, x.numel());
    float* pf = f.data<float>();
    const float* s = scales.data<float>();
    for (int64_t r = 0; r < rows; ++r) {
      for (int64_t c = 0; c < cols; ++c) pf[r * cols + c] *= s[ScaleIndex(blocks, rows, ld, r, c)];
    }
    return f;
  };
  const Tensor fa = dequantize(a, scale_a, a_blocks);
  const Tensor fb = dequantize(b, scale_b, b_blocks);
  if (out.dtype() == DType::kF32) {
    kernels::Matmul(fa, fb, out, {.trans_b = true});
    return;
  }
  Tensor wide = Tensor::Empty(out.shape(), DType::kF32, MemoryTag::kWorkspace);
  kernels::Matmul(fa, fb, wide, {.trans_b = true});
  ConvertBuffer(wide.raw_data(), DType::kF32, out.raw_data(), out.dtype(), out.numel());
}

}  // namespace loom::runtime::kernels::cpu
