// Token and position embeddings, and the LM head tied to the token embedding.
//
//   Embedding wte("wte", vocab, C);            // ids i32 [B, T] -> [B, T, C]
//   PositionEmbedding wpe("wpe", context, C);  // x [B, T, C] -> x + wpe[0:T]
//   TiedLmHead head(wte.weight());             // x [B, T, C] -> logits [B, T, vocab] = x · wteᵀ
//
// The tied head registers a second use of the token embedding, so its grad-ready hook fires only
// after both the head and the embedding have contributed.
//
// Vocabulary-parallel (a tp group of more than one rank): the token embedding's rows are split
// over tp (unevenly where tp does not divide the vocabulary; ShardSpec::Split(0, "tp")); the
// lookup gives zero rows for other ranks' tokens and all-reduces; the tied head computes only
// this rank's logit columns [B, T, V_local] (CrossEntropyLoss with the same group finishes the
// job) and all-reduces dx. f32, host.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "parallel/layer.h"
#include "parallel/layers/linear.h"
#include "parallel/tensor/tensor_parallel.h"

namespace loom::parallel {

class Embedding : public Layer {
 public:
  Embedding(const std::string& prefix, int64_t num_embeddings, int64_t dim,
            const TensorParallelOptions& tp = {});
  // x: i32 ids of any shape; returns [..., dim].
  runtime::Tensor Forward(Stash& stash, const runtime::Tensor& ids) override;
  // Returns an undefined tensor: ids have no gradient.
  runtime::Tensor BackwardInput(Stash& stash, const runtime::Tensor& dy) override;
  void BackwardWeight(Stash& stash) override;
  std::vector<Parameter*> Parameters() override { return {&weight_}; }
  Parameter& weight() { return weight_; }

 private:
  // Row gradients (Parameter::AddRowGradients): every token's (ids i32 [N], dy [N, C]); under
  // tensor parallelism with the ids in this vocabulary shard's coordinates, -1 where another shard
  // holds the token's row.
  void AddShardRows(const runtime::Tensor& ids, const runtime::Tensor& dy);

  TensorParallelOptions tp_;
  Parameter weight_;
};

class PositionEmbedding : public Layer {
 public:
  PositionEmbedding(const std::string& prefix, int64_t max_positions, int64_t dim,
                    const TensorParallelOptions& tp = {});
  // x: [B, T, dim] with T <= max_positions; returns x + weight[0:T] (broadcast over B). Under
  // sequence parallelism x is this rank's token rows [N/tp, dim] and each row gets its position.
  runtime::Tensor Forward(Stash& stash, const runtime::Tensor& x) override;
  runtime::Tensor BackwardInput(Stash& stash, const runtime::Tensor& dy) override;
  void BackwardWeight(Stash& stash) override;
  std::vector<Parameter*> Parameters() override { return {&weight_}; }

 private:
  // Calls run(row, position, count) for each run of rows of x with consecutive positions.
  template <typename F>
  void ForEachPositionRun(const Stash& stash, const runtime::Tensor& x, F run) const;

  TensorParallelOptions tp_;
  Parameter weight_;
};

class TiedLmHead : public Layer {
 public:
  // `embedding` is the [vocab, dim] token embedding (split over tp like it, if given); it must
  // outlive this layer. A column-parallel Linear over it (vocabulary columns).
  explicit TiedLmHead(Parameter& embedding, const TensorParallelOptions& tp = {});
  runtime::Tensor Forward(Stash& stash, const runtime::Tensor& x) override {
    return head_.Forward(stash, x);
  }
  runtime::Tensor BackwardInput(Stash& stash, const runtime::Tensor& dlogits) override {
    return head_.BackwardInput(stash, dlogits);
  }
  void BackwardWeight(Stash& stash) override { head_.BackwardWeight(stash); }
  // The tied weight belongs to the embedding layer, which lists it.
  std::vector<Parameter*> Parameters() override { return {}; }

 private:
  Linear head_;
};

}  // namespace loom::parallel
