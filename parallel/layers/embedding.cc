#include "parallel/layers/embedding.h"

#include <algorithm>

#include "runtime/base/check.h"
#include "runtime/kernels/bias_add.h"
#include "runtime/kernels/embedding.h"

namespace loom::parallel {

using runtime::DType;
using runtime::MemoryTag;
using runtime::Shape;
using runtime::Tensor;
namespace kernels = runtime::kernels;

namespace {

// The first row of the vocabulary this rank's shard of `table` holds.
int64_t VocabStart(const Parameter& table) {
  return table.shard_spec().is_split() ? SplitRange(table.global_shape(), table.shard_spec()).first
                                       : 0;
}

}  // namespace

Embedding::Embedding(const std::string& prefix, int64_t num_embeddings, int64_t dim,
                     const TensorParallelOptions& tp)
    : tp_(tp), weight_(prefix + ".weight", {num_embeddings, dim}, tp.Spec(0), true) {
  weight_.AddUse();
}

Tensor Embedding::Forward(Stash& stash, const Tensor& ids) {
  Shape shape = ids.shape();
  shape.push_back(weight_.value().dim(1));
  Tensor out = Tensor::Empty(shape, DType::kF32, MemoryTag::kActivation);
  stash.Put(this, "ids", ids);
  if (!tp_.active()) {
    kernels::EmbeddingForward(ids, weight_.value(), out);
    return out;
  }
  // This shard's rows, zeros for other ranks' tokens, summed over the shards (under sequence
  // parallelism scattered: each rank keeps its token rows).
  kernels::EmbeddingShardForward(ids, weight_.value(), VocabStart(weight_), out);
  return ReduceRowOutput(tp_, std::move(out));
}

Tensor Embedding::BackwardInput(Stash& stash, const Tensor& dy) {
  stash.Put(this, "dy", dy);
  return Tensor();
}

void Embedding::BackwardWeight(Stash& stash) {
  const Tensor ids = stash.Get(this, "ids");
  // Every token's gradient (gathered under sequence parallelism).
  const Tensor dy =
      tp_.active() ? RowOutputGrad(tp_, stash.Get(this, "dy")) : stash.Get(this, "dy");
  const Tensor flat_ids = ids.Reshape({ids.numel()});
  const Tensor rows = dy.Reshape({ids.numel(), dy.dim(-1)});
  if (weight_.row_gradients_enabled()) {  // data parallelism exchanges the rows themselves
    AddShardRows(flat_ids, rows);
  } else {
    if (tp_.active()) {  // into this shard's rows
      kernels::EmbeddingShardBackward(rows, flat_ids, VocabStart(weight_), weight_.grad());
    } else {
      kernels::EmbeddingBackward(rows, flat_ids, weight_.grad());
    }
    weight_.ContributionDone();
  }
  stash.Erase(this, "dy");
}

void Embedding::AddShardRows(const Tensor& ids, const Tensor& dy) {
  if (!tp_.active()) {
    weight_.AddRowGradients(ids, dy);
    return;
  }
  // A vocabulary shard: every token's row, with the ids in its own coordinates and -1 for the
  // tokens whose rows other shards hold (data parallelism leaves those out).
  const int64_t first = VocabStart(weight_), held = weight_.local_shape()[0];
  Tensor local = Tensor::Empty({ids.numel()}, DType::kI32, MemoryTag::kActivation);
  for (int64_t n = 0; n < ids.numel(); ++n) {
    const int64_t id = ids.data<int32_t>()[n] - first;
    local.data<int32_t>()[n] = id >= 0 && id < held ? static_cast<int32_t>(id) : -1;
  }
  weight_.AddRowGradients(local, dy);
}

PositionEmbedding::PositionEmbedding(const std::string& prefix, int64_t max_positions, int64_t dim,
                                     const TensorParallelOptions& tp)
    : tp_(tp), weight_(prefix + ".weight", {max_positions, dim}, ShardSpec::Replicated(), true) {
  weight_.AddUse();
}

template <typename F>
void PositionEmbedding::ForEachPositionRun(const Stash& stash, const Tensor& x, F run) const {
  // [B, T, C]: B runs of T positions. Token rows [N/tp, C] (SP): row i is token
  // first + i of the micro-batch, at position (first + i) mod T.
  const bool rows = x.rank() == 2;
  const int64_t t = rows ? stash.sequence_length() : x.dim(1);
  const int64_t n = rows ? x.dim(0) : x.dim(0) * x.dim(1);
  LOOM_CHECK(t > 0 && t <= weight_.global_shape()[0])
      << "PositionEmbedding " << weight_.name() << ": sequence length " << t << " outside [1, "
      << weight_.global_shape()[0] << "]";
  const int64_t first = rows ? FirstTokenRow(tp_, n) : 0;
  for (int64_t i = 0; i < n;) {
    const int64_t position = (first + i) % t, count = std::min(n - i, t - position);
    run(i, position, count);
    i += count;
  }
}

// Adding weight[p, p + k) to k consecutive token rows is a bias add over one row of k·C.
Tensor PositionEmbedding::Forward(Stash& stash, const Tensor& x) {
  Tensor y = x.Clone();
  const Tensor rows = y.Reshape({-1, y.dim(-1)});
  ForEachPositionRun(stash, x, [&](int64_t row, int64_t position, int64_t count) {
    Tensor run = rows.Slice(row, row + count).Reshape({1, -1});
    kernels::BiasAdd(run, weight_.value().Slice(position, position + count).Reshape({-1}));
  });
  return y;
}

Tensor PositionEmbedding::BackwardInput(Stash& stash, const Tensor& dy) {
  stash.Put(this, "dy", dy);
  return dy;
}

void PositionEmbedding::BackwardWeight(Stash& stash) {
  const Tensor dy = stash.Get(this, "dy");
  const Tensor rows = dy.Reshape({-1, dy.dim(-1)});
  ForEachPositionRun(stash, dy, [&](int64_t row, int64_t position, int64_t count) {
    Tensor dw = weight_.grad().Slice(position, position + count).Reshape({-1});
    kernels::BiasBackward(rows.Slice(row, row + count).Reshape({1, -1}), dw);
  });
  weight_.ContributionDone();
  stash.Erase(this, "dy");
}

TiedLmHead::TiedLmHead(Parameter& embedding, const TensorParallelOptions& tp)
    : head_(embedding,
            {.bias = false, .layout = WeightLayout::kOutIn, .tp = tp.As(TpSplit::kColumn)}) {}

}  // namespace loom::parallel
