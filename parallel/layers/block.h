// Pre-norm transformer block with residual connections:
//   r = x + attn(norm1(x));  y = r + mlp(norm2(r))
//
//   TransformerBlock block(std::make_unique<LayerNorm>("h.0.ln_1", C),
//                          std::make_unique<CausalSelfAttention>("h.0.attn", C, NH),
//                          std::make_unique<LayerNorm>("h.0.ln_2", C),
//                          std::make_unique<GeluMlp>("h.0.mlp", C, 4 * C));
//   block.set_recompute(true);   // stash only x; recompute the rest during backward
//
// Any Layer works in each slot (e.g. RMSNorm, SwiGluMlp, or an MoE layer later). f32, host.
#pragma once

#include <memory>
#include <vector>

#include "parallel/layer.h"

namespace loom::parallel {

class TransformerBlock : public Layer {
 public:
  TransformerBlock(std::unique_ptr<Layer> norm1, std::unique_ptr<Layer> attn,
                   std::unique_ptr<Layer> norm2, std::unique_ptr<Layer> mlp);

  runtime::Tensor Forward(Stash& stash, const runtime::Tensor& x) override;
  runtime::Tensor BackwardInput(Stash& stash, const runtime::Tensor& dy) override;
  void BackwardWeight(Stash& stash) override;
  std::vector<Parameter*> Parameters() override;

  // Full recompute: Forward keeps only its input; BackwardInput reruns the forward first.
  void set_recompute(bool recompute) { recompute_ = recompute; }
  bool recompute() const { return recompute_; }
  Layer* mlp() { return mlp_.get(); }

 private:
  runtime::Tensor ForwardInto(Stash& stash, const runtime::Tensor& x);

  std::unique_ptr<Layer> norm1_, attn_, norm2_, mlp_;
  bool recompute_ = false;
};

}  // namespace loom::parallel
