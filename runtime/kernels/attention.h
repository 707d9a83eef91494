// Causal multi-head self-attention over a fused QKV projection, forward and backward.
//
//   // qkv: [B, T, 3·C] as [q heads | k heads | v heads], C = num_heads · head_dim
//   AttentionForward(qkv, num_heads, out, probs);     // out: [B, T, C]; probs: [B, NH, T, T]
//   AttentionBackward(dout, qkv, probs, num_heads, dqkv);   // dqkv accumulated
//
// Scores are q·k / √head_dim with a causal mask (position t sees 0..t); probs keeps the softmax
// (zeros above the diagonal) for the backward. The layout matches GPT-2's c_attn output, and a
// tensor-parallel rank passes its local heads the same way. Host or device memory (the CUDA
// twin: batched GEMMs on cuBLASLt and a softmax kernel; its row form, LOOM_CUDA_ATTENTION=rows,
// keeps a row of scores in shared memory: sequences up to about 12k tokens).
//
// qkv and probs are both f32, or both bf16 (autocast): then every product takes bf16 operands
// with f32 accumulation, the probabilities are rounded to bf16 (as probs stores them) before
// P·V, and dout and dS before the products that read them; softmax and its backward run in f32.
// out, dout and dqkv are f32 either way.
#pragma once

#include <cstdint>

#include "runtime/tensor.h"

namespace loom::runtime::kernels {

void AttentionForward(const Tensor& qkv, int64_t num_heads, Tensor& out, Tensor& probs);
void AttentionBackward(const Tensor& dout, const Tensor& qkv, const Tensor& probs,
                       int64_t num_heads, Tensor& dqkv);

// The same attention in the flash form (Dao et al., FlashAttention-2): no T x T probabilities are
// kept. The forward writes out [B, T, C] f32 and each query row's log-sum-exp of its scaled,
// masked scores, lse [B, NH, T] f32; the backward recomputes the probabilities from qkv and lse,
// with D_t = dout_t · out_t for the softmax's row term, and adds into dqkv. qkv f32 or bf16
// (autocast: read as bf16, computed in f32 with no rounding of the probabilities). On the CPU
// an exact softmax per row (cpu/flash_attention.cc), the reference; on a CUDA device a tiled
// kernel with an online softmax (cuda/flash_attention.cu; head_dim 32, 64 or 128) that agrees
// within f32 rounding.
void FlashAttentionForward(const Tensor& qkv, int64_t num_heads, Tensor& out, Tensor& lse);
void FlashAttentionBackward(const Tensor& dout, const Tensor& qkv, const Tensor& out,
                            const Tensor& lse, int64_t num_heads, Tensor& dqkv);

}  // namespace loom::runtime::kernels
