#include "parallel/layers/block.h"

#include "runtime/kernels/elementwise.h"

namespace loom::parallel {

using runtime::DType;
using runtime::MemoryTag;
using runtime::Tensor;
namespace kernels = runtime::kernels;

TransformerBlock::TransformerBlock(std::unique_ptr<Layer> norm1, std::unique_ptr<Layer> attn,
                                   std::unique_ptr<Layer> norm2, std::unique_ptr<Layer> mlp)
    : norm1_(std::move(norm1)),
      attn_(std::move(attn)),
      norm2_(std::move(norm2)),
      mlp_(std::move(mlp)) {}

Tensor TransformerBlock::ForwardInto(Stash& stash, const Tensor& x) {
  Tensor r = attn_->Forward(stash, norm1_->Forward(stash, x));
  kernels::AddInto(r, x);  // r = x + attn(norm1(x)), reusing attn's output buffer
  Tensor y = mlp_->Forward(stash, norm2_->Forward(stash, r));
  kernels::AddInto(y, r);
  return y;
}

Tensor TransformerBlock::Forward(Stash& stash, const Tensor& x) {
  if (!recompute_) return ForwardInto(stash, x);
  Stash scratch = stash.EmptyLike();  // activations dropped at the end of this call
  Tensor y = ForwardInto(scratch, x);
  stash.Put(this, "x", x);
  return y;
}

Tensor TransformerBlock::BackwardInput(Stash& stash, const Tensor& dy) {
  if (recompute_) ForwardInto(stash, stash.Get(this, "x"));
  // y = r + mlp(norm2(r)): dr = dy + norm2ᵀ(mlpᵀ(dy)); r = x + attn(norm1(x)) likewise.
  Tensor dr = norm2_->BackwardInput(stash, mlp_->BackwardInput(stash, dy));
  kernels::AddInto(dr, dy);
  Tensor dx = norm1_->BackwardInput(stash, attn_->BackwardInput(stash, dr));
  kernels::AddInto(dx, dr);
  return dx;
}

void TransformerBlock::BackwardWeight(Stash& stash) {
  mlp_->BackwardWeight(stash);
  norm2_->BackwardWeight(stash);
  attn_->BackwardWeight(stash);
  norm1_->BackwardWeight(stash);
}

std::vector<Parameter*> TransformerBlock::Parameters() {
  return ConcatParameters({norm1_.get(), attn_.get(), norm2_.get(), mlp_.get()});
}

}  // namespace loom::parallel
