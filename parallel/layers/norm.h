// Normalisation layers over the last dimension: LayerNorm (GPT-2) and RMSNorm (Llama-style).
//
//   LayerNorm ln("h.0.ln_1", 384);           // parameters h.0.ln_1.weight, h.0.ln_1.bias
//   Tensor y = ln.Forward(stash, x);         // x, y: [..., 384]
//
// Their weight gradients are accumulated during BackwardInput (the kernel computes dx, dw and db
// in one pass over x); BackwardWeight only reports them final. f32, host.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "parallel/layer.h"

namespace loom::parallel {

class LayerNorm : public Layer {
 public:
  LayerNorm(const std::string& prefix, int64_t dim, float eps = 1e-5f);
  runtime::Tensor Forward(Stash& stash, const runtime::Tensor& x) override;
  runtime::Tensor BackwardInput(Stash& stash, const runtime::Tensor& dy) override;
  void BackwardWeight(Stash& stash) override;
  std::vector<Parameter*> Parameters() override { return {&weight_, &bias_}; }

 private:
  float eps_;
  Parameter weight_;
  Parameter bias_;
};

class RMSNorm : public Layer {
 public:
  RMSNorm(const std::string& prefix, int64_t dim, float eps = 1e-6f);
  runtime::Tensor Forward(Stash& stash, const runtime::Tensor& x) override;
  runtime::Tensor BackwardInput(Stash& stash, const runtime::Tensor& dy) override;
  void BackwardWeight(Stash& stash) override;
  std::vector<Parameter*> Parameters() override { return {&weight_}; }

 private:
  float eps_;
  Parameter weight_;
};

}  // namespace loom::parallel
