#include "parallel/layers/embedding.h"

#include "parallel/tensor/tensor_parallel.h"
#include "runtime/base/check.h"
#include "runtime/kernels/bias_add.h"
#include "runtime/kernels/embedding.h"
#include "runtime/kernels/matmul.h"

namespace loom::parallel {

using runtime::DType;
using runtime::MemoryTag;
using runtime::Shape;
using runtime::Tensor;
namespace kernels = runtime::kernels;

namespace {

bool Split(comm::Communicator* tp) { return tp != nullptr && tp->size() > 1; }

// The first row of the vocabulary this rank's shard of `table` holds.
int64_t VocabStart(const Parameter& table) {
  return table.shard_spec().is_split() ? SplitRange(table.global_shape(), table.shard_spec()).first
                                       : 0;
}

}  // namespace

Embedding::Embedding(const std::string& prefix, int64_t num_embeddings, int64_t dim,
                     comm::Communicator* tp)
    : tp_(tp),
      weight_(prefix + ".weight", {num_embeddings, dim},
              TensorParallelOptions{.split = TpSplit::kColumn, .group = tp}.Spec(0), true) {
  weight_.AddUse();
}

Tensor Embedding::Forward(Stash& stash, const Tensor& ids) {
  Shape shape = ids.shape();
  shape.push_back(weight_.value().dim(1));
  Tensor out = Tensor::Empty(shape, DType::kF32, MemoryTag::kActivation);
  if (Split(tp_)) {  // this shard's rows, zeros elsewhere, summed over the shards
    kernels::EmbeddingShardForward(ids, weight_.value(), VocabStart(weight_), out);
    AllReduceSumInPlace(*tp_, out);
  } else {
    kernels::EmbeddingForward(ids, weight_.value(), out);
  }
  stash.Put(this, "ids", ids);
  return out;
}

Tensor Embedding::BackwardInput(Stash& stash, const Tensor& dy) {
  stash.Put(this, "dy", dy);
  return Tensor();
}

void Embedding::BackwardWeight(Stash& stash) {
  if (Split(tp_)) {
    kernels::EmbeddingShardBackward(stash.Get(this, "dy"), stash.Get(this, "ids"),
                                    VocabStart(weight_), weight_.grad());
  } else {
    kernels::EmbeddingBackward(stash.Get(this, "dy"), stash.Get(this, "ids"), weight_.grad());
  }
  weight_.ContributionDone();
  stash.Erase(this, "dy");
}

PositionEmbedding::PositionEmbedding(const std::string& prefix, int64_t max_positions, int64_t dim)
    : weight_(prefix + ".weight", {max_positions, dim}, ShardSpec::Replicated(), true) {
  weight_.AddUse();
}

// Adding weight[0:T] to every sequence is a bias add over rows of length T·C.
Tensor PositionEmbedding::Forward(Stash& /*stash*/, const Tensor& x) {
  const int64_t t = x.dim(1);
  LOOM_CHECK_LE(t, weight_.value().dim(0))
      << "PositionEmbedding " << weight_.name() << ": sequence length exceeds the context";
  Tensor y = x.Clone();
  Tensor rows = y.Reshape({x.dim(0), -1});
  kernels::BiasAdd(rows, weight_.value().Slice(0, t).Reshape({-1}));
  return y;
}

Tensor PositionEmbedding::BackwardInput(Stash& stash, const Tensor& dy) {
  stash.Put(this, "dy", dy);
  return dy;
}

void PositionEmbedding::BackwardWeight(Stash& stash) {
  const Tensor dy = stash.Get(this, "dy");
  const int64_t t = dy.dim(1);
  Tensor dw = weight_.grad().Slice(0, t).Reshape({-1});
  kernels::BiasBackward(dy.Reshape({dy.dim(0), -1}), dw);
  weight_.ContributionDone();
  stash.Erase(this, "dy");
}

TiedLmHead::TiedLmHead(Parameter& embedding, comm::Communicator* tp)
    : embedding_(embedding), tp_(tp) {
  embedding_.AddUse();
}

Tensor TiedLmHead::Forward(Stash& stash, const Tensor& x) {
  Shape shape = x.shape();
  shape.back() = embedding_.value().dim(0);
  Tensor logits = Tensor::Empty(shape, DType::kF32, MemoryTag::kActivation);
  stash.Put(this, "x", x);  // first: under autocast the GEMM reads the stash's bf16 copy
  kernels::Matmul(stash.ForwardGemmInput(this, "x", x), embedding_.value(), logits,
                  {.trans_b = true, .compute_dtype = stash.ForwardGemmDType()});
  return logits;
}

Tensor TiedLmHead::BackwardInput(Stash& stash, const Tensor& dlogits) {
  const Tensor x = stash.GetForGemm(this, "x");  // only its shape is read here
  Tensor dx = Tensor::Empty(x.shape(), DType::kF32, MemoryTag::kActivation);  // overwritten
  stash.Put(this, "dy", dlogits);  // first: under bf16 the GEMM reuses the stash's bf16 copy
  kernels::MatmulBackwardInput(stash.GetForGemm(this, "dy"), embedding_.value(), dx,
                               {.trans_b = true, .compute_dtype = stash.GemmDType()});
  if (Split(tp_)) AllReduceSumInPlace(*tp_, dx);  // each rank's dx covers its vocabulary only
  return dx;
}

void TiedLmHead::BackwardWeight(Stash& stash) {
  kernels::MatmulBackward(stash.GetForGemm(this, "x"), embedding_.value(),
                          stash.GetForGemm(this, "dy"), nullptr, &embedding_.grad(),
                          {.trans_b = true, .compute_dtype = stash.GemmDType()});
  embedding_.ContributionDone();
  stash.Erase(this, "dy");
}

}  // namespace loom::parallel
