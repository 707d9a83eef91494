#include "models/data/batch_sampler.h"

#include <algorithm>
#include <string>

#include "absl/strings/str_cat.h"
#include "runtime/base/check.h"
#include "runtime/base/status_macros.h"

namespace loom::models::data {
namespace {

using runtime::Allocator;
using runtime::DType;
using runtime::MemoryTag;
using runtime::Tensor;

// a·b·c + 1, or -1 on int64 overflow (so absurd B, T or world sizes are reported, not wrapped).
int64_t ProductPlusOne(int64_t a, int64_t b, int64_t c) {
  int64_t ab, abc, result;
  if (__builtin_mul_overflow(a, b, &ab) || __builtin_mul_overflow(ab, c, &abc) ||
      __builtin_add_overflow(abc, 1, &result)) {
    return -1;
  }
  return result;
}

absl::Status CheckShape(const TokenDataset& dataset, int64_t B, int64_t T) {
  if (B < 1 || T < 1) {
    return absl::InvalidArgumentError(absl::StrCat(dataset.name(), ": batch size B=", B,
                                                   " and sequence length T=", T,
                                                   " must both be at least 1"));
  }
  return absl::OkStatus();
}

// Copies tokens [start, start + B·T + 1) into a batch; the caller checked the range.
Batch CutBatch(const TokenDataset& dataset, int64_t start, int64_t B, int64_t T,
               Allocator* allocator) {
  LOOM_CHECK(start >= 0 && start + B * T + 1 <= dataset.size())
      << dataset.name() << ": window at " << start << " of " << B * T + 1 << " tokens";
  Batch batch{Tensor::Empty({B, T}, DType::kI32, MemoryTag::kActivation, allocator),
              Tensor::Empty({B, T}, DType::kI32, MemoryTag::kActivation, allocator)};
  const int32_t* window = dataset.tokens().data() + start;
  std::copy(window, window + B * T, batch.inputs.data<int32_t>());
  std::copy(window + 1, window + B * T + 1, batch.targets.data<int32_t>());
  return batch;
}

}  // namespace

BatchSampler::BatchSampler(const TokenDataset& dataset, int64_t B, int64_t T, int rank,
                           int world_size, Allocator* allocator)
    : dataset_(&dataset),
      B_(B),
      T_(T),
      rank_(rank),
      world_size_(world_size),
      allocator_(allocator) {}

absl::StatusOr<BatchSampler> BatchSampler::Create(const TokenDataset& dataset, int64_t B, int64_t T,
                                                  int rank, int world_size, Allocator* allocator) {
  LOOM_RETURN_IF_ERROR(CheckShape(dataset, B, T));
  if (world_size < 1 || rank < 0 || rank >= world_size) {
    return absl::InvalidArgumentError(absl::StrCat(dataset.name(), ": rank ", rank,
                                                   " is outside [0, world_size=", world_size, ")"));
  }
  const int64_t needed = ProductPlusOne(world_size, B, T);
  if (needed < 0 || needed > dataset.size()) {
    return absl::InvalidArgumentError(absl::StrCat(
        dataset.name(), ": one training step of world_size=", world_size, " x B=", B, " x T=", T,
        " needs ", needed < 0 ? std::string("more than 2^63") : absl::StrCat(needed),
        " tokens (world_size x B x T + 1), file has ", dataset.size(),
        "; use a longer file or smaller B or T"));
  }
  return BatchSampler(dataset, B, T, rank, world_size, allocator);
}

Batch BatchSampler::Next() {
  Batch batch = CutBatch(*dataset_, position_ + rank_ * B_ * T_, B_, T_, allocator_);
  const int64_t step = world_size_ * B_ * T_;
  position_ += step;
  if (position_ + step + 1 > dataset_->size()) position_ = 0;
  return batch;
}

absl::Status BatchSampler::SetPosition(int64_t position) {
  const int64_t step = world_size_ * B_ * T_;
  if (position < 0 || position > dataset_->size() - step - 1) {
    return absl::OutOfRangeError(absl::StrCat(
        dataset_->name(), ": data position ", position, " is out of range: a step reads ", step + 1,
        " tokens from it and the file has ", dataset_->size(), ", so it must be in [0, ",
        dataset_->size() - step - 1, "] (was it saved with another file, B, T or world size?)"));
  }
  position_ = position;
  return absl::OkStatus();
}

absl::StatusOr<Batch> EvalBatch(const TokenDataset& dataset, int64_t B, int64_t T, int64_t index,
                                Allocator* allocator) {
  LOOM_RETURN_IF_ERROR(CheckShape(dataset, B, T));
  if (index < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat(dataset.name(), ": eval batch index ", index, " is negative"));
  }
  // Tokens needed: index·B·T + B·T + 1 = (index + 1)·B·T + 1.
  const int64_t needed = index == INT64_MAX ? -1 : ProductPlusOne(index + 1, B, T);
  if (needed < 0 || needed > dataset.size()) {
    return absl::OutOfRangeError(absl::StrCat(
        dataset.name(), ": eval batch ", index, " (B=", B, ", T=", T, ") needs ",
        needed < 0 ? std::string("more than 2^63") : absl::StrCat(needed), " tokens, file has ",
        dataset.size(), " (enough for ", NumEvalBatches(dataset, B, T), " eval batches)"));
  }
  return CutBatch(dataset, index * B * T, B, T, allocator);
}

int64_t NumEvalBatches(const TokenDataset& dataset, int64_t B, int64_t T) {
  if (B < 1 || T < 1 || dataset.size() < 1) return 0;
  const int64_t per_batch = ProductPlusOne(B, T, 1) - 1;
  if (per_batch < 0) return 0;
  return (dataset.size() - 1) / per_batch;
}

}  // namespace loom::models::data
