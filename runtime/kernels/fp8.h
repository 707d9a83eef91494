// FP8 (e4m3) quantization and the FP8 GEMM, as DeepSeek-V3 trains its linear layers: activations
// scaled per 1 x 128 block of a row, weights per 128 x 128 tile, or one scale per tensor.
//
//   Tensor xq = Tensor::Empty({M, K}, DType::kF8E4M3, tag);
//   Tensor xs = Tensor::Empty(Fp8ScaleShape(M, K, Fp8Blocks::k1x128), DType::kF32, tag);
//   QuantizeFp8(x, Fp8Blocks::k1x128, xq, xs);          // x f32 or bf16 [M, K]
//   QuantizeFp8(w, Fp8Blocks::k128x128, wq, ws);        // w [N, K]
//   Fp8Matmul(xq, xs, Fp8Blocks::k1x128, wq, ws, Fp8Blocks::k128x128, out);   // out ≈ x · wᵀ
//
// A block whose largest magnitude is amax gets scale amax / 448 and stores x / scale rounded to
// the nearest e4m3 (fp8_formula.h); the scales are what multiplies the stored values back. Their
// layouts are the ones cuBLASLt takes (as PyTorch's _scaled_mm passes them), for x [rows, cols]:
//   kTensor   [1]
//   k1x128    [ceil(cols/128), rows]: block kb of row r at kb · rows + r
//   k128x128  [ceil(rows/128), ld], ld = ceil(cols/128) rounded up to 4 (16-byte rows): tile
//             (rb, kb) at rb · ld + kb; the padding holds zeros
// Fp8Matmul computes out[M, N] = (a · scale_a) · (b · scale_b)ᵀ with a [M, K] and b [N, K] both
// stored K-contiguous (the layout FP8 tensor cores take), f32 accumulation, out f32 or bf16.
// Scalings: both kTensor, or a k1x128 with b k128x128. K and N must be multiples of 16, and K of
// 128 with block scales. On the CPU the operands are dequantized to f32 and multiplied by the f32
// GEMM; the CUDA twin is one cuBLASLt call (docs/gpu.md).
#pragma once

#include <cstdint>

#include "runtime/kernels/fp8_formula.h"
#include "runtime/tensor.h"

namespace loom::runtime::kernels {

// The scales' shape for x [rows, cols] quantized with `blocks` (the layouts above).
Shape Fp8ScaleShape(int64_t rows, int64_t cols, Fp8Blocks blocks);

// x f32 or bf16 [rows, cols] -> q e4m3 [rows, cols] and f32 scales of Fp8ScaleShape.
void QuantizeFp8(const Tensor& x, Fp8Blocks blocks, Tensor& q, Tensor& scales);

void Fp8Matmul(const Tensor& a, const Tensor& scale_a, Fp8Blocks a_blocks, const Tensor& b,
               const Tensor& scale_b, Fp8Blocks b_blocks, Tensor& out);

}  // namespace loom::runtime::kernels
