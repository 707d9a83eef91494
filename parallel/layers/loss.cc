#include "parallel/layers/loss.h"

#include "runtime/base/check.h"
#include "runtime/kernels/cross_entropy.h"

namespace loom::parallel {

using runtime::DType;
using runtime::MemoryTag;
using runtime::Tensor;
namespace kernels = runtime::kernels;

float CrossEntropyLoss::Forward(Stash& stash, const Tensor& logits, const Tensor& targets) {
  const int64_t n = targets.numel();
  const Tensor flat_targets = targets.Reshape({n});
  const Tensor flat_logits = logits.Reshape({n, logits.dim(-1)});
  const int32_t* t = flat_targets.data<int32_t>();
  for (int64_t i = 0; i < n; ++i) {
    LOOM_CHECK(t[i] >= 0 && t[i] < logits.dim(-1))
        << "CrossEntropyLoss: target " << t[i] << " at position " << i
        << " is outside the vocabulary [0, " << logits.dim(-1) << ")";
  }
  Tensor row_max = Tensor::Empty({n}, DType::kF32, MemoryTag::kActivation);
  Tensor sum_exp = Tensor::Empty({n}, DType::kF32, MemoryTag::kActivation);
  Tensor target_logit = Tensor::Empty({n}, DType::kF32, MemoryTag::kActivation);
  Tensor losses = Tensor::Empty({n}, DType::kF32, MemoryTag::kActivation);
  kernels::CrossEntropyStats(flat_logits, flat_targets, 0, row_max, sum_exp, target_logit);
  kernels::CrossEntropyLoss(row_max, sum_exp, target_logit, losses);
  stash.Put(this, "logits", flat_logits);
  stash.PutExact(this, "targets", flat_targets);
  stash.PutExact(this, "row_max", row_max);
  stash.PutExact(this, "sum_exp", sum_exp);
  stash.PutExact(this, "losses", losses);
  double total = 0.0;
  for (float l : losses.ToF32Vector()) total += l;
  return n == 0 ? 0.0f : static_cast<float>(total / static_cast<double>(n));
}

Tensor CrossEntropyLoss::losses(const Stash& stash) const { return stash.Get(this, "losses"); }

Tensor CrossEntropyLoss::Backward(Stash& stash, float scale) {
  const Tensor logits = stash.Get(this, "logits");
  const int64_t n = logits.dim(0);
  Tensor dloss = Tensor::Empty({n}, DType::kF32, MemoryTag::kActivation);
  dloss.Fill(scale / static_cast<float>(n));
  Tensor dlogits = Tensor::Zeros(logits.shape(), DType::kF32, MemoryTag::kActivation);
  kernels::CrossEntropyBackward(logits, stash.Get(this, "targets"), 0, stash.Get(this, "row_max"),
                                stash.Get(this, "sum_exp"), dloss, dlogits);
  return dlogits;
}

}  // namespace loom::parallel
