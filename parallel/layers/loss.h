// Mean softmax cross-entropy over all positions of a micro-batch.
//
//   CrossEntropyLoss loss;
//   float mean = loss.Forward(stash, logits, targets);   // logits [B, T, V], targets i32 [B, T]
//   Tensor dlogits = loss.Backward(stash, 1.0f / num_micro_batches);
//
// Backward returns ∂(scale · mean loss)/∂logits. f32, host.
//
// Vocabulary-parallel (CrossEntropyLoss loss(tp_options, vocab)): each rank's logits are its
// columns [v0, v0 + V_local) of the vocabulary, split over tp as ShardSpec::Split(0, "tp") splits
// the token embedding; the row max and the sums of exp and of the target logit are all-reduced (two
// collectives of [B·T] values), so no rank ever holds a [tokens, vocab] tensor. Every tp rank
// gets the same loss.
#pragma once

#include <cstdint>

#include "parallel/stash.h"
#include "parallel/tensor/tensor_parallel.h"
#include "runtime/tensor.h"

namespace loom::parallel {

class CrossEntropyLoss {
 public:
  CrossEntropyLoss() = default;
  CrossEntropyLoss(const TensorParallelOptions& tp, int64_t vocab_size)
      : tp_(tp), vocab_(vocab_size) {}

  // Returns the mean loss (accumulated in double); stashes logits and targets.
  float Forward(Stash& stash, const runtime::Tensor& logits, const runtime::Tensor& targets);
  // Per-position losses of the last Forward on this stash ([B·T]).
  runtime::Tensor losses(const Stash& stash) const;
  runtime::Tensor Backward(Stash& stash, float scale);

 private:
  bool split() const { return tp_.active(); }
  // The first vocabulary id of this rank's logits.
  int64_t vocab_start() const;

  TensorParallelOptions tp_;
  int64_t vocab_ = 0;  // the whole vocabulary (0: the logits' width)
};

}  // namespace loom::parallel
