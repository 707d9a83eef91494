// Matrix multiply (GEMM) forward and backward.
//
//   // y[M, N] = x[M, K] · W[N, K]ᵀ  (a Linear layer with PyTorch's weight layout)
//   Matmul(x, w, y, {.trans_b = true});
//   // backward: dx += dy · W, dW += dyᵀ · x
//   MatmulBackward(x, w, dy, &dx, &dw, {.trans_b = true});
//
// f32 runs OpenBLAS sgemm directly. bf16 / f16 operands are widened to f32 and accumulated in f32
// (the result is rounded once when `out` is 16-bit). Host memory, synchronous.
#pragma once

#include "runtime/tensor.h"

namespace loom::runtime::kernels {

struct MatmulOptions {
  bool trans_a = false;  // use aᵀ
  bool trans_b = false;  // use bᵀ
  float alpha = 1.0f;
  float beta = 0.0f;  // 0 overwrites `out`; 1 accumulates into it
};

// out[M, N] = alpha · op(a) · op(b) + beta · out.
// a: [M, K] ([K, M] if trans_a); with trans_a false a may have more dims, [..., K] is read as
// [M, K] and out as [..., N]. b: [K, N] ([N, K] if trans_b), 2-D. a and b share a dtype in {f32,
// bf16, f16}; out is f32 or that dtype.
void Matmul(const Tensor& a, const Tensor& b, Tensor& out, const MatmulOptions& options = {});

// Gradients of out = op(a) · op(b) given dout: da += ∂/∂a, db += ∂/∂b (accumulated; pass nullptr
// to skip one). Shapes and dtypes as for Matmul, with da shaped like a and db like b.
void MatmulBackward(const Tensor& a, const Tensor& b, const Tensor& dout, Tensor* da, Tensor* db,
                    const MatmulOptions& options = {});

}  // namespace loom::runtime::kernels
