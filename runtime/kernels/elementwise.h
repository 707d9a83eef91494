// Elementwise helpers: residual add, gradient accumulation, scaling and the sum of squares that
// gradient-norm clipping needs.
//
//   Add(x, attn_out, residual);            // residual = x + attn_out (forward of a residual)
//   AddInto(dx, dresidual);                // dx += dresidual (its backward / accumulation)
//   Scale(grad, 1.0f / clip);
//   double ss = SumOfSquares(grad);        // f32 / bf16 / f16, accumulated in double
//   std::vector<double> each = SumsOfSquares(grads);   // one device round trip for all
//
// Host or device memory (the CUDA twins, runtime/kernels/cuda_twins.h). SumOfSquares adds fixed
// 4096-element blocks and then the block sums in order, so it is bitwise reproducible for any
// thread count.
#pragma once

#include <span>
#include <vector>

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
// SumOfSquares of each tensor (the same values), all on the host or all on one device: there the
// sums are read back together, one wait for the device instead of one per tensor.
std::vector<double> SumsOfSquares(std::span<const Tensor> xs);
// dst = src in dst's dtype (ConvertBuffer's rounding: nearest even), same shape; host or device
// (where one side must be f32 and fp8 is not built).
void Convert(const Tensor& src, Tensor& dst);
// Each element of the f32 x rounded to the nearest `dtype` value (bf16 or f16; f32: unchanged),
// kept in f32: an activation that a bf16 run would hold as bf16.
void RoundToDType(Tensor& x, DType dtype);
// Every element of the i32 `ids` in [0, limit); otherwise fails with "<what>[i] = v is outside
// [0, limit)" for the first: at once on the host, at the next CheckDeviceErrors on a device.
void CheckIndices(const Tensor& ids, int64_t limit, const char* what);
// Device kernels record bad input they meet (ids or targets out of range) instead of stopping:
// this fails with the first such record, naming the op, the position and the value. It waits
// for the device; call it where the host waits anyway (reading the loss). No-op without CUDA.
void CheckDeviceErrors();

}  // namespace loom::runtime::kernels
