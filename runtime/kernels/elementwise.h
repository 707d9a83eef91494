// Elementwise helpers: residual add, gradient accumulation, scaling and the sum of squares that
// gradient-norm clipping needs.
//
//   Add(x, attn_out, residual);            // residual = x + attn_out (forward of a residual)
//   AddInto(dx, dresidual);                // dx += dresidual (its backward / accumulation)
//   Scale(grad, 1.0f / clip);
//   double ss = SumOfSquares(grad);        // f32 / bf16 / f16, accumulated in double
//
// Host memory, synchronous. SumOfSquares adds fixed 4096-element blocks and then the block sums
// in order, so it is bitwise reproducible for any thread count.
#pragma once

#include "runtime/tensor.h"

namespace loom::runtime::kernels {

// out = a + b; f32, all the same shape. out may alias a or b.
void Add(const Tensor& a, const Tensor& b, Tensor& out);
// dst += src; f32, same shape.
void AddInto(Tensor& dst, const Tensor& src);
// x *= factor; f32.
void Scale(Tensor& x, float factor);
// Σ x², accumulated in double; x is f32, bf16 or f16.
double SumOfSquares(const Tensor& x);

}  // namespace loom::runtime::kernels
