// Mean softmax cross-entropy over all positions of a micro-batch.
//
//   CrossEntropyLoss loss;
//   float mean = loss.Forward(stash, logits, targets);   // logits [B, T, V], targets i32 [B, T]
//   Tensor dlogits = loss.Backward(stash, 1.0f / num_micro_batches);
//
// Backward returns ∂(scale · mean loss)/∂logits. f32, host.
#pragma once

#include "parallel/stash.h"
#include "runtime/tensor.h"

namespace loom::parallel {

class CrossEntropyLoss {
 public:
  // Returns the mean loss (accumulated in double); stashes logits and targets.
  float Forward(Stash& stash, const runtime::Tensor& logits, const runtime::Tensor& targets);
  // Per-position losses of the last Forward on this stash ([B·T]).
  runtime::Tensor losses(const Stash& stash) const;
  runtime::Tensor Backward(Stash& stash, float scale);
};

}  // namespace loom::parallel
