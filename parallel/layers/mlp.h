// Feed-forward blocks: the GPT-2 GELU MLP and the SwiGLU MLP (Llama-style).
//
//   GeluMlp mlp("h.0.mlp", 384, 1536);      // c_fc [384, 1536] -> GELU -> c_proj [1536, 384]
//   SwiGluMlp mlp2("layers.0.mlp", 384, 1024);  // down(silu(gate(x)) · up(x)), no biases
//   Tensor y = mlp.Forward(stash, x);       // x, y: [..., 384]
//
// Any Layer mapping [..., C] to [..., C] can stand in a TransformerBlock's MLP slot (the MoE
// layer does, later). With a tp group of more than one rank the hidden layer is split over it:
// the first projections column-parallel, the last row-parallel (parallel/tensor/
// tensor_parallel.h: one all-reduce each way, or with sequence parallelism an all-gather and a
// reduce-scatter). f32, host.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "parallel/layer.h"
#include "parallel/layers/linear.h"

namespace loom::parallel {

class GeluMlp : public Layer {
 public:
  GeluMlp(const std::string& prefix, int64_t dim, int64_t hidden,
          const TensorParallelOptions& tp = {});
  runtime::Tensor Forward(Stash& stash, const runtime::Tensor& x) override;
  runtime::Tensor BackwardInput(Stash& stash, const runtime::Tensor& dy) override;
  void BackwardWeight(Stash& stash) override;
  std::vector<Parameter*> Parameters() override;

 private:
  Linear c_fc_;
  Linear c_proj_;
};

class SwiGluMlp : public Layer {
 public:
  SwiGluMlp(const std::string& prefix, int64_t dim, int64_t hidden,
            const TensorParallelOptions& tp = {});
  runtime::Tensor Forward(Stash& stash, const runtime::Tensor& x) override;
  runtime::Tensor BackwardInput(Stash& stash, const runtime::Tensor& dy) override;
  void BackwardWeight(Stash& stash) override;
  std::vector<Parameter*> Parameters() override;

 private:
  TensorParallelOptions tp_;
  Linear gate_proj_;
  Linear up_proj_;
  Linear down_proj_;
};

}  // namespace loom::parallel
