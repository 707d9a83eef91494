#include "parallel/layers/norm.h"

#include "runtime/kernels/norm.h"

namespace loom::parallel {

using runtime::DType;
using runtime::MemoryTag;
using runtime::Tensor;
namespace kernels = runtime::kernels;

namespace {

Tensor RowStats(const Tensor& x) {
  return Tensor::Empty({x.numel() / x.dim(-1)}, DType::kF32, MemoryTag::kActivation);
}

}  // namespace

LayerNorm::LayerNorm(const std::string& prefix, int64_t dim, float eps)
    : eps_(eps),
      weight_(prefix + ".weight", {dim}, ShardSpec::Replicated(), false),
      bias_(prefix + ".bias", {dim}, ShardSpec::Replicated(), false) {
  weight_.AddUse();
  bias_.AddUse();
}

Tensor LayerNorm::Forward(Stash& stash, const Tensor& x) {
  Tensor y = Tensor::Empty(x.shape(), DType::kF32, MemoryTag::kActivation);
  Tensor mean = RowStats(x), rstd = RowStats(x);
  kernels::LayerNormForward(x, weight_.value(), bias_.value(), eps_, y, mean, rstd);
  stash.Put(this, "x", x);
  stash.PutExact(this, "mean", mean);
  stash.PutExact(this, "rstd", rstd);
  return y;
}

Tensor LayerNorm::BackwardInput(Stash& stash, const Tensor& dy) {
  const Tensor x = stash.Get(this, "x");
  Tensor dx = Tensor::Zeros(x.shape(), DType::kF32, MemoryTag::kActivation);
  kernels::LayerNormBackward(dy, x, weight_.value(), stash.Get(this, "mean"),
                             stash.Get(this, "rstd"), dx, weight_.grad(), bias_.grad());
  return dx;
}

void LayerNorm::BackwardWeight(Stash& /*stash*/) {
  weight_.ContributionDone();
  bias_.ContributionDone();
}

RMSNorm::RMSNorm(const std::string& prefix, int64_t dim, float eps)
    : eps_(eps), weight_(prefix + ".weight", {dim}, ShardSpec::Replicated(), false) {
  weight_.AddUse();
}

Tensor RMSNorm::Forward(Stash& stash, const Tensor& x) {
  Tensor y = Tensor::Empty(x.shape(), DType::kF32, MemoryTag::kActivation);
  Tensor rstd = RowStats(x);
  kernels::RMSNormForward(x, weight_.value(), eps_, y, rstd);
  stash.Put(this, "x", x);
  stash.PutExact(this, "rstd", rstd);
  return y;
}

Tensor RMSNorm::BackwardInput(Stash& stash, const Tensor& dy) {
  const Tensor x = stash.Get(this, "x");
  Tensor dx = Tensor::Zeros(x.shape(), DType::kF32, MemoryTag::kActivation);
  kernels::RMSNormBackward(dy, x, weight_.value(), stash.Get(this, "rstd"), dx, weight_.grad());
  return dx;
}

void RMSNorm::BackwardWeight(Stash& /*stash*/) { weight_.ContributionDone(); }

}  // namespace loom::parallel
