#include "parallel/layers/loss.h"

#include "parallel/shard.h"
#include "runtime/base/check.h"
#include "runtime/kernels/cross_entropy.h"
#include "runtime/kernels/elementwise.h"

namespace loom::parallel {

using runtime::DType;
using runtime::MemoryTag;
using runtime::Tensor;
namespace kernels = runtime::kernels;

int64_t CrossEntropyLoss::vocab_start() const {
  return split() ? BalancedRange(vocab_, tp_.group->rank(), tp_.group->size()).first : 0;
}

float CrossEntropyLoss::Forward(Stash& stash, const Tensor& logits, const Tensor& targets) {
  const int64_t n = targets.numel();
  const Tensor flat_targets = targets.Reshape({n});
  const Tensor flat_logits = logits.Reshape({n, logits.dim(-1)});
  const int64_t vocab = vocab_ > 0 ? vocab_ : logits.dim(-1);
  LOOM_CHECK(split() || logits.dim(-1) == vocab)
      << "CrossEntropyLoss: logits of width " << logits.dim(-1) << " for a vocabulary of " << vocab;
  // On a device reported below, once the losses are read.
  kernels::CheckIndices(flat_targets, vocab, "CrossEntropyLoss: targets");
  Tensor row_max = Tensor::Empty({n}, DType::kF32, MemoryTag::kActivation);
  // sum_exp and target_logit side by side, so the sharded case sums both in one collective.
  Tensor sums = Tensor::Empty({2, n}, DType::kF32, MemoryTag::kActivation);
  Tensor sum_exp = sums.Slice(0, 1).Reshape({n});
  Tensor target_logit = sums.Slice(1, 2).Reshape({n});
  Tensor losses = Tensor::Empty({n}, DType::kF32, MemoryTag::kActivation);
  kernels::CrossEntropyStats(flat_logits, flat_targets, vocab_start(), row_max, sum_exp,
                             target_logit);
  if (split()) {  // statistics over the whole vocabulary
    Tensor global_max = row_max.Clone();
    AllReduceTp(tp_, global_max, comm::ReduceOp::kMax);
    kernels::CrossEntropyRescaleSumExp(row_max, global_max, sum_exp);
    AllReduceTp(tp_, sums, comm::ReduceOp::kSum);
    row_max = global_max;
  }
  kernels::CrossEntropyLoss(row_max, sum_exp, target_logit, losses);
  stash.Put(this, "logits", flat_logits);
  stash.PutExact(this, "targets", flat_targets);
  stash.PutExact(this, "row_max", row_max);
  stash.PutExact(this, "sum_exp", sum_exp);
  stash.PutExact(this, "losses", losses);
  double total = 0.0;
  for (float l : losses.ToF32Vector()) total += l;
  kernels::CheckDeviceErrors();  // the host has waited for the device to read the losses
  return n == 0 ? 0.0f : static_cast<float>(total / static_cast<double>(n));
}

Tensor CrossEntropyLoss::losses(const Stash& stash) const { return stash.Get(this, "losses"); }

Tensor CrossEntropyLoss::Backward(Stash& stash, float scale) {
  const Tensor logits = stash.Get(this, "logits");
  const int64_t n = logits.dim(0);
  Tensor dloss = Tensor::Empty({n}, DType::kF32, MemoryTag::kActivation);
  dloss.Fill(scale / static_cast<float>(n));
  Tensor dlogits = Tensor::Zeros(logits.shape(), DType::kF32, MemoryTag::kActivation);
  kernels::CrossEntropyBackward(logits, stash.Get(this, "targets"), vocab_start(),
                                stash.Get(this, "row_max"), stash.Get(this, "sum_exp"), dloss,
                                dlogits);
  return dlogits;
}

}  // namespace loom::parallel
