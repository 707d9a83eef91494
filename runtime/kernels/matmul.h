// Matrix multiply (GEMM) forward and backward.
//
//   // y[M, N] = x[M, K] · W[N, K]ᵀ  (a Linear layer with PyTorch's weight layout)
//   Matmul(x, w, y, {.trans_b = true});
//   // backward: dx += dy · W, dW += dyᵀ · x
//   MatmulBackward(x, w, dy, &dx, &dw, {.trans_b = true});
//
// The product runs on the configured GEMM provider (kernels/cpu/gemm.h). bf16 operands are
// multiplied with f32 accumulation: by the CPU's bf16 units where they are faster than f32 (AMX;
// AVX512_BF16 on AMD), otherwise widened to f32. f16 operands are widened. The result is rounded
// once when `out` is 16-bit. Host memory, or device memory through cuBLASLt (kernels/cuda/gemm.cc).
//
//   // bf16 training (as bf16 autocast): operands rounded to bf16, f32 accumulation and output
//   Matmul(x, w, y, {.trans_b = true, .compute_dtype = DType::kBF16});
#pragma once

#include "runtime/tensor.h"

namespace loom::runtime::kernels {

struct MatmulOptions {
  bool trans_a = false;  // use aᵀ
  bool trans_b = false;  // use bᵀ
  float alpha = 1.0f;
  float beta = 0.0f;  // 0 overwrites `out`; 1 accumulates into it
  // kF32: operands as given. kBF16: f32 operands are rounded to bf16 first (a and b may then
  // differ in dtype), so the products are exact and only the f32 sums round.
  DType compute_dtype = DType::kF32;
  // Matmul only: f32 [N] added to every row of out after the product (the GEMM's epilogue on a
  // CUDA device, one pass fewer than a separate BiasAdd; out must be f32).
  const Tensor* bias = nullptr;
};

// out[M, N] = alpha · op(a) · op(b) + beta · out.
// a: [M, K] ([K, M] if trans_a); with trans_a false a may have more dims, [..., K] is read as
// [M, K] and out as [..., N]. b: [K, N] ([N, K] if trans_b), 2-D. a and b share a dtype in {f32,
// bf16, f16} (with compute_dtype bf16, each of a and b is f32 or bf16); out is f32 or a's dtype.
void Matmul(const Tensor& a, const Tensor& b, Tensor& out, const MatmulOptions& options = {});

// Gradients of out = op(a) · op(b) given dout: da += ∂/∂a, db += ∂/∂b (accumulated; pass nullptr
// to skip one). Shapes and dtypes as for Matmul, with da shaped like a and db like b.
void MatmulBackward(const Tensor& a, const Tensor& b, const Tensor& dout, Tensor* da, Tensor* db,
                    const MatmulOptions& options = {});

// The input gradient alone for an untransposed a (a linear layer's dX): da = dout · op(b)ᵀ, written
// with options.beta as Matmul does (0, the default: overwritten, so da need not be zeroed first;
// 1: accumulated). options.trans_a must be false; a may have leading dimensions, as in Matmul.
void MatmulBackwardInput(const Tensor& dout, const Tensor& b, Tensor& da,
                         const MatmulOptions& options = {});

}  // namespace loom::runtime::kernels
