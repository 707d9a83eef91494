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

#include "comm/communicator.h"
#include "parallel/layer.h"

namespace loom::parallel {

class Embedding : public Layer {
 public:
  Embedding(const std::string& prefix, int64_t num_embeddings, int64_t dim,
            comm::Communicator* tp = nullptr);
  // x: i32 ids of any shape; returns [..., dim].
  runtime::Tensor Forward(Stash& stash, const runtime::Tensor& ids) override;
  // Returns an undefined tensor: ids have no gradient.
  runtime::Tensor BackwardInput(Stash& stash, const runtime::Tensor& dy) override;
  void BackwardWeight(Stash& stash) override;
  std::vector<Parameter*> Parameters() override { return {&weight_}; }
  Parameter& weight() { return weight_; }

 private:
  comm::Communicator* tp_;
  Parameter weight_;
};

class PositionEmbedding : public Layer {
 public:
  PositionEmbedding(const std::string& prefix, int64_t max_positions, int64_t dim);
  // x: [B, T, dim] with T <= max_positions; returns x + weight[0:T] (broadcast over B).
  runtime::Tensor Forward(Stash& stash, const runtime::Tensor& x) override;
  runtime::Tensor BackwardInput(Stash& stash, const runtime::Tensor& dy) override;
  void BackwardWeight(Stash& stash) override;
  std::vector<Parameter*> Parameters() override { return {&weight_}; }

 private:
  Parameter weight_;
};

class TiedLmHead : public Layer {
 public:
  // `embedding` is the [vocab, dim] token embedding (split over `tp` like it, if given); it must
  // outlive this layer.
  explicit TiedLmHead(Parameter& embedding, comm::Communicator* tp = nullptr);
  runtime::Tensor Forward(Stash& stash, const runtime::Tensor& x) override;
  runtime::Tensor BackwardInput(Stash& stash, const runtime::Tensor& dlogits) override;
  void BackwardWeight(Stash& stash) override;
  // The tied weight belongs to the embedding layer, which lists it.
  std::vector<Parameter*> Parameters() override { return {}; }

 private:
  Parameter& embedding_;
  comm::Communicator* tp_;
};

}  // namespace loom::parallel
