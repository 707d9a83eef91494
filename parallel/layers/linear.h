// Linear: y = x · W + b over the last dimension, with the weight stored either [in, out]
// (Hugging Face GPT-2 "Conv1D" layout) or [out, in] (torch.nn.Linear / Llama layout).
//
//   Linear fc("h.0.mlp.c_fc", 384, 1536, {.bias = true, .layout = WeightLayout::kInOut});
//   Tensor y = fc.Forward(stash, x);          // x: [..., 384] -> y: [..., 1536]
//   Tensor dx = fc.BackwardInput(stash, dy);
//   fc.BackwardWeight(stash);                 // dW += xᵀ·dy, db += Σ dy
//
// Parameters are "<prefix>.weight" (decayed) and "<prefix>.bias" (not decayed). With
// options.tp the layer is column- or row-parallel (parallel/tensor/tensor_parallel.h): it holds
// its shard of the weight (and of the bias, column-parallel) and does the pair's collective.
// f32, host.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "parallel/layer.h"
#include "parallel/tensor/tensor_parallel.h"

namespace loom::parallel {

enum class WeightLayout { kInOut, kOutIn };

struct LinearOptions {
  bool bias = true;
  WeightLayout layout = WeightLayout::kInOut;
  TensorParallelOptions tp = {};
};

class Linear : public Layer {
 public:
  Linear(const std::string& prefix, int64_t in_features, int64_t out_features,
         LinearOptions options = {});
  // A linear layer over another layer's weight, e.g. an LM head tied to the token embedding
  // ([vocab, dim], layout kOutIn, split like the embedding when column-parallel). It registers one
  // more use of `shared` (which must outlive it), has no bias and lists no parameters: the owner
  // lists the weight.
  Linear(Parameter& shared, LinearOptions options);

  runtime::Tensor Forward(Stash& stash, const runtime::Tensor& x) override;
  // Forward without adding the bias, for a caller that fuses the bias add into its next op
  // (GeluMlp: kernels::BiasGeluForward). The bias stays this layer's parameter; BackwardWeight
  // computes its gradient as usual. (Row-parallel: the output is already summed over tp.)
  runtime::Tensor ForwardWithoutBias(Stash& stash, const runtime::Tensor& x);
  runtime::Tensor BackwardInput(Stash& stash, const runtime::Tensor& dy) override;
  void BackwardWeight(Stash& stash) override;
  std::vector<Parameter*> Parameters() override;

  Parameter& weight() { return *weight_; }
  Parameter* bias() { return bias_ ? &*bias_ : nullptr; }
  int64_t in_features() const { return in_; }
  int64_t out_features() const { return out_; }
  // This rank's output features (out / tp for a column-parallel layer, else out).
  int64_t local_out_features() const;

 private:
  bool trans_b() const { return options_.layout == WeightLayout::kOutIn; }
  bool split(TpSplit s) const { return options_.tp.active() && options_.tp.split == s; }
  // The product, plus `bias` when given: in the GEMM (its epilogue on a device) where every rank
  // computes whole outputs, after the reduction for a row-parallel layer.
  runtime::Tensor ForwardWith(Stash& stash, const runtime::Tensor& x, const runtime::Tensor* bias);

  int64_t in_;
  int64_t out_;
  LinearOptions options_;
  std::optional<Parameter> own_weight_;  // unless shared
  Parameter* weight_;
  std::optional<Parameter> bias_;  // with options.bias
};

}  // namespace loom::parallel
