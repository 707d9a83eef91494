// Causal multi-head self-attention (GPT-2): fused qkv projection, attention, output projection.
//
//   CausalSelfAttention attn("h.0.attn", /*dim=*/384, /*num_heads=*/6);
//   Tensor y = attn.Forward(stash, x);       // x, y: [B, T, 384]
//
// Parameters (GPT-2 names, [in, out] layout): <prefix>.c_attn.{weight,bias} [C, 3C], [3C] and
// <prefix>.c_proj.{weight,bias} [C, C], [C]. With a tp group of more than one rank the heads are
// split over it: c_attn column-parallel in three parts (each rank holds q, k and v of its heads),
// c_proj row-parallel. Under sequence parallelism x and y are this rank's tokens ([N/tp, C] rows)
// and the stash's sequence length says how the gathered tokens form sequences. `flash`: the
// attention in the flash form (runtime/kernels/attention.h FlashAttentionForward): the stash keeps
// the heads' output and each row's log-sum-exp instead of the [B, NH, T, T] probabilities. f32
// (bf16 operands under autocast), on the host or a device.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "parallel/layer.h"
#include "parallel/layers/linear.h"

namespace loom::parallel {

class CausalSelfAttention : public Layer {
 public:
  CausalSelfAttention(const std::string& prefix, int64_t dim, int64_t num_heads,
                      const TensorParallelOptions& tp = {}, bool flash = false);
  runtime::Tensor Forward(Stash& stash, const runtime::Tensor& x) override;
  runtime::Tensor BackwardInput(Stash& stash, const runtime::Tensor& dy) override;
  void BackwardWeight(Stash& stash) override;
  std::vector<Parameter*> Parameters() override;

  Linear& c_attn() { return c_attn_; }
  Linear& c_proj() { return c_proj_; }

 private:
  int64_t num_heads_;  // this rank's
  bool flash_;
  Linear c_attn_;
  Linear c_proj_;
};

}  // namespace loom::parallel
