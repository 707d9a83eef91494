#include "parallel/layers/attention.h"

#include "runtime/base/check.h"
#include "runtime/kernels/attention.h"

namespace loom::parallel {

using runtime::DType;
using runtime::MemoryTag;
using runtime::Tensor;
namespace kernels = runtime::kernels;

namespace {

int TpSize(const TensorParallelOptions& tp) { return tp.active() ? tp.group->size() : 1; }

int64_t HeadDim(const std::string& prefix, int64_t dim, int64_t num_heads,
                const TensorParallelOptions& tp) {
  LOOM_CHECK(num_heads > 0 && dim % num_heads == 0)
      << prefix << ": dim " << dim << " is not divisible by num_heads " << num_heads;
  LOOM_CHECK(num_heads % TpSize(tp) == 0)
      << prefix << ": tp " << TpSize(tp) << " does not divide num_heads " << num_heads;
  return dim / num_heads;
}

}  // namespace

CausalSelfAttention::CausalSelfAttention(const std::string& prefix, int64_t dim, int64_t num_heads,
                                         const TensorParallelOptions& tp, bool flash)
    : num_heads_(num_heads / TpSize(tp)),
      flash_(flash),
      c_attn_(prefix + ".c_attn", dim, 3 * dim,
              {.tp = tp.As(TpSplit::kColumn, 3, HeadDim(prefix, dim, num_heads, tp))}),
      c_proj_(prefix + ".c_proj", dim, dim, {.tp = tp.As(TpSplit::kRow, 1, dim / num_heads)}) {}

Tensor CausalSelfAttention::Forward(Stash& stash, const Tensor& x) {
  Tensor qkv = c_attn_.Forward(stash, x);
  if (qkv.rank() == 2) {  // sequence parallelism: every rank's tokens, as sequences again
    LOOM_CHECK_GT(stash.sequence_length(), 0) << "attention on token rows needs the stash's "
                                                 "sequence length (Stash::SetSequenceLength)";
    qkv = qkv.Reshape({-1, stash.sequence_length(), qkv.dim(1)});
  }
  const int64_t b = qkv.dim(0), t = qkv.dim(1), c = qkv.dim(2) / 3;  // this rank's heads' width
  stash.Put(this, "qkv", qkv);  // first: under autocast attention reads the stash's bf16 copy
  // Under autocast the kernel runs on bf16 operands and writes bf16 probabilities, which the
  // stash keeps as they are (kernels/attention.h).
  Tensor heads = Tensor::Empty({b, t, c}, DType::kF32, MemoryTag::kActivation);
  if (flash_) {  // the heads' output and each row's log-sum-exp, for the backward
    Tensor lse = Tensor::Empty({b, num_heads_, t}, DType::kF32, MemoryTag::kActivation);
    kernels::FlashAttentionForward(stash.ForwardGemmInput(this, "qkv", qkv), num_heads_, heads,
                                   lse);
    stash.Put(this, "heads", heads);
    stash.Put(this, "lse", lse);
    return c_proj_.Forward(stash, heads);
  }
  Tensor probs =
      Tensor::Empty({b, num_heads_, t, t}, stash.ForwardGemmDType(), MemoryTag::kActivation);
  kernels::AttentionForward(stash.ForwardGemmInput(this, "qkv", qkv), num_heads_, heads, probs);
  stash.Put(this, "probs", probs);
  return c_proj_.Forward(stash, heads);
}

Tensor CausalSelfAttention::BackwardInput(Stash& stash, const Tensor& dy) {
  Tensor dheads = c_proj_.BackwardInput(stash, dy);
  // The operands in the dtype the forward used: bf16 under autocast (probs is stored bf16 then).
  const Tensor qkv = stash.ForwardGemmDType() == DType::kF32 ? stash.Get(this, "qkv")
                                                             : stash.GetForGemm(this, "qkv");
  Tensor dqkv = Tensor::Zeros(qkv.shape(), DType::kF32, MemoryTag::kActivation);
  if (flash_) {
    kernels::FlashAttentionBackward(dheads, qkv, stash.Get(this, "heads"), stash.Get(this, "lse"),
                                    num_heads_, dqkv);
  } else {
    kernels::AttentionBackward(dheads, qkv, stash.Get(this, "probs"), num_heads_, dqkv);
  }
  return c_attn_.BackwardInput(stash, dqkv);
}

void CausalSelfAttention::BackwardWeight(Stash& stash) {
  c_proj_.BackwardWeight(stash);
  c_attn_.BackwardWeight(stash);
}

std::vector<Parameter*> CausalSelfAttention::Parameters() {
  return ConcatParameters({&c_attn_, &c_proj_});
}

}  // namespace loom::parallel
