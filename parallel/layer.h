// Layer: the unit model authors compose. Forward, BackwardInput (dX) and BackwardWeight (dW) are
// separate steps so pipeline schedules can run W later and data parallelism can start reducing a
// gradient the moment it is final.
//
//   class Scale2 : public Layer {
//    public:
//     Tensor Forward(Stash& s, const Tensor& x) override { ... }
//     Tensor BackwardInput(Stash& s, const Tensor& dy) override { ... }
//   };
//
// Contract: Forward(stash, x) may Put tensors into `stash` under `this`; BackwardInput(stash, dy)
// returns dx (a new tensor) and keeps what BackwardWeight needs (e.g. dy) in the stash;
// BackwardWeight(stash) adds this micro-batch's contribution into each parameter's grad() and
// calls Parameter::ContributionDone(). All tensors are f32 on the host today.
#pragma once

#include <initializer_list>
#include <vector>

#include "parallel/parameter.h"
#include "parallel/stash.h"
#include "runtime/tensor.h"

namespace loom::parallel {

class Layer {
 public:
  virtual ~Layer() = default;

  virtual runtime::Tensor Forward(Stash& stash, const runtime::Tensor& x) = 0;
  virtual runtime::Tensor BackwardInput(Stash& stash, const runtime::Tensor& dy) = 0;
  // Parameterless layers need not override.
  virtual void BackwardWeight(Stash& /*stash*/) {}
  // The layer's own parameters and those of its sub-layers, in a fixed order.
  virtual std::vector<Parameter*> Parameters() { return {}; }
};

// Called by a model around each use of a unit's parameters (a unit is a top-level layer: the
// embeddings, one block, the final norm, the LM head), in the order the units run. Data
// parallelism uses them to gather ZeRO-3 shards just before use (and prefetch the next unit's),
// release them after, and give ZeRO-2/3 gradients storage only while a unit's backward needs it.
class ParameterUseHooks {
 public:
  enum class Pass { kForward, kBackward };
  virtual ~ParameterUseHooks() = default;
  virtual void BeforeUse(int unit, Pass pass) = 0;
  virtual void AfterUse(int unit, Pass pass) = 0;
};

// The parameters of `layers`, in order (for composite layers' Parameters()).
std::vector<Parameter*> ConcatParameters(std::initializer_list<Layer*> layers);

// Convenience: BackwardInput then BackwardWeight, as an ordinary backward pass runs them.
inline runtime::Tensor Backward(Layer& layer, Stash& stash, const runtime::Tensor& dy) {
  runtime::Tensor dx = layer.BackwardInput(stash, dy);
  layer.BackwardWeight(stash);
  return dx;
}

}  // namespace loom::parallel
