// Batches of next-token prediction for GPT training, cut from a TokenDataset the way llm.c does:
// sequential windows of B×T+1 consecutive tokens, inputs the first B×T, targets shifted by one.
//
//   LOOM_ASSIGN_OR_RETURN(BatchSampler sampler,
//                         BatchSampler::Create(train, /*B=*/8, /*T=*/64, rank, world_size));
//   Batch batch = sampler.Next();                  // i32 [8, 64] inputs and targets
//   checkpoint.data_position = sampler.position();  // resume: sampler.SetPosition(saved)
//   LOOM_ASSIGN_OR_RETURN(Batch eval, EvalBatch(val, 8, 64, /*index=*/0));
#pragma once

#include <cstdint>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "models/data/token_dataset.h"
#include "runtime/allocator.h"
#include "runtime/tensor.h"

namespace loom::models::data {

// One rank's batch: inputs[b][t] = tokens[start + b·T + t], targets[b][t] = that token's successor
// tokens[start + b·T + t + 1]. Both i32 [B, T], host memory, MemoryTag::kActivation, owned by the
// batch (fresh tensors, not views of the dataset).
struct Batch {
  runtime::Tensor inputs;
  runtime::Tensor targets;
};

// Sequential, deterministic sampling for data-parallel training. A global step reads the
// world·B·T + 1 tokens from position(); rank r takes the window starting at position() + r·B·T
// (B·T + 1 tokens, so neighbouring ranks share one boundary token as llm.c does). Afterwards
// position() advances by world·B·T, and wraps to 0 when the next global step would run past the
// end of the dataset; the tail after the last full step is skipped each epoch.
//
// Every rank constructs its sampler with the same (dataset, B, T, world_size) and calls Next() once
// per step; position() is the same value on every rank, which is what a checkpoint stores. The
// sampler reads `dataset` on every Next(): the dataset must outlive it and stay in place (not be
// moved from). Not thread-safe.
class BatchSampler {
 public:
  // InvalidArgument naming the dataset and the value unless B >= 1, T >= 1, world_size >= 1,
  // 0 <= rank < world_size, and the dataset holds at least world_size·B·T + 1 tokens.
  // `allocator` (default Allocator::Default()) allocates the batches; it must outlive the sampler.
  static absl::StatusOr<BatchSampler> Create(const TokenDataset& dataset, int64_t B, int64_t T,
                                             int rank, int world_size,
                                             runtime::Allocator* allocator = nullptr);

  // This rank's batch of the current global step; advances position() to the next step.
  Batch Next();

  // Start of the next global step, in tokens from the start of the dataset.
  int64_t position() const { return position_; }
  // Restores a position saved from position() (by a sampler with the same dataset, B, T and
  // world_size). OutOfRange naming the dataset unless 0 <= position and
  // position + world_size·B·T + 1 <= dataset size.
  absl::Status SetPosition(int64_t position);

  int64_t batch_size() const { return B_; }
  int64_t seq_len() const { return T_; }
  int rank() const { return rank_; }
  int world_size() const { return world_size_; }

 private:
  BatchSampler(const TokenDataset& dataset, int64_t B, int64_t T, int rank, int world_size,
               runtime::Allocator* allocator);

  const TokenDataset* dataset_;
  int64_t B_;
  int64_t T_;
  int rank_;
  int world_size_;
  runtime::Allocator* allocator_;
  int64_t position_ = 0;
};

// Evaluation batch `index` (0-based): inputs and targets from the B·T + 1 tokens
// [index·B·T, index·B·T + B·T + 1) of the dataset, as llm.c evaluates the first N batches of a
// validation file. The same on every rank (tensors as in Batch, from `allocator`, default
// Allocator::Default()). InvalidArgument unless B >= 1, T >= 1, index >= 0; OutOfRange naming the
// dataset ("needs X tokens, file has Y") if the dataset is too short for batch `index`.
absl::StatusOr<Batch> EvalBatch(const TokenDataset& dataset, int64_t B, int64_t T, int64_t index,
                                runtime::Allocator* allocator = nullptr);

// How many evaluation batches of B×T the dataset holds: (size - 1) / (B·T), 0 if B or T < 1.
int64_t NumEvalBatches(const TokenDataset& dataset, int64_t B, int64_t T);

}  // namespace loom::models::data
