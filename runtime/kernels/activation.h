// Pointwise activations for MLPs: GELU (tanh form, as GPT-2) and SwiGLU, forward and backward.
//
//   GeluForward(h, a);                 // a = gelu(h)
//   BiasGeluForward(h, bias, a);       // h += bias (over the last dim); a = gelu(h): one pass
//   GeluBackward(da, h, dh);           // dh += gelu'(h) · da
//   GeluBackward(da, h, dh, false);    // dh = gelu'(h) · da (dh need not be zeroed)
//   SwiGLUForward(gate, up, a);        // a = silu(gate) · up
//   SwiGLUBackward(da, gate, up, dgate, dup);
//
// f32, any shape (all arguments of one call share it); backward outputs are accumulated.
// GeluBackward also takes x in bf16 (a bf16 training run's stashed copy, read without widening it
// first: the same numbers). Host memory (synchronous) or device memory (the CUDA twins, queued on
// the default stream).
#pragma once

#include "runtime/tensor.h"

namespace loom::runtime::kernels {

// gelu(x) = 0.5 x (1 + tanh(√(2/π) (x + 0.044715 x³)))
void GeluForward(const Tensor& x, Tensor& out);
// accumulate false: dx's previous contents are ignored (the same bits as accumulating into zeros).
void GeluBackward(const Tensor& dout, const Tensor& x, Tensor& dx, bool accumulate = true);
// The bias add of a linear layer fused with the GELU after it: x += bias (bias [x.dim(-1)]), then
// out = gelu(x), row by row, so x is read from memory once instead of twice; the same values as
// BiasAdd followed by GeluForward.
void BiasGeluForward(Tensor& x, const Tensor& bias, Tensor& out);

// out = silu(gate) · up, silu(g) = g · sigmoid(g)
void SwiGLUForward(const Tensor& gate, const Tensor& up, Tensor& out);
void SwiGLUBackward(const Tensor& dout, const Tensor& gate, const Tensor& up, Tensor& dgate,
                    Tensor& dup);

}  // namespace loom::runtime::kernels
