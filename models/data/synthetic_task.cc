#include "models/data/synthetic_task.h"

#include <algorithm>
#include <cmath>
#include <string>
#include <utility>

#include "absl/strings/str_cat.h"
#include "runtime/base/check.h"
#include "runtime/base/status_macros.h"
#include "runtime/rng.h"

namespace loom::models::data {
namespace {

constexpr int kMaxSortTaskSize = 65536;

std::string StreamName(uint64_t seed) {
  return absl::StrCat("synthetic sort task (seed ", seed, ")");
}

}  // namespace

double SortTask::LossFloor() const {
  return num_digits * std::log(static_cast<double>(num_values)) /
         static_cast<double>(example_length());
}

absl::Status SortTask::Validate() const {
  auto error = [](auto&&... parts) {
    return absl::InvalidArgumentError(absl::StrCat("synthetic sort task: ", parts...));
  };
  if (num_digits < 1 || num_digits > kMaxSortTaskSize) {
    return error("num_digits ", num_digits, " is outside [1, ", kMaxSortTaskSize, "]");
  }
  if (num_values < 1 || num_values > kMaxSortTaskSize) {
    return error("num_values ", num_values, " is outside [1, ", kMaxSortTaskSize, "]");
  }
  if (vocab_size < num_values + 2) {
    return error("vocab_size ", vocab_size, " is below num_values + 2 = ", num_values + 2,
                 " (digits, separator, end of example)");
  }
  return absl::OkStatus();
}

std::vector<int32_t> SortExample(const SortTask& task, uint64_t seed, int64_t k) {
  const absl::Status valid = task.Validate();
  LOOM_CHECK(valid.ok()) << valid;
  LOOM_CHECK_GE(k, 0);
  static const uint64_t kStreamHash = runtime::Fnv1a64("synthetic_sort");
  const int K = task.num_digits;
  std::vector<int32_t> example(static_cast<size_t>(task.example_length()));
  for (int i = 0; i < K; ++i) {
    const uint32_t bits =
        runtime::RandomBits(seed, kStreamHash, static_cast<uint64_t>(k) * K + i)[0];
    example[i] = static_cast<int32_t>((static_cast<uint64_t>(bits) * task.num_values) >> 32);
  }
  example[K] = task.separator();
  std::copy(example.begin(), example.begin() + K, example.begin() + K + 1);
  std::sort(example.begin() + K + 1, example.begin() + 2 * K + 1);
  example[2 * K + 1] = task.end_of_example();
  return example;
}

absl::StatusOr<TokenDataset> MakeSyntheticDataset(uint64_t seed, int64_t num_tokens,
                                                  const SortTask& task) {
  LOOM_RETURN_IF_ERROR(task.Validate());
  if (num_tokens < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat(StreamName(seed), ": num_tokens ", num_tokens, " must be at least 1"));
  }
  const int64_t length = task.example_length();
  std::vector<int32_t> tokens;
  tokens.reserve(static_cast<size_t>(num_tokens));
  for (int64_t k = 0; static_cast<int64_t>(tokens.size()) < num_tokens; ++k) {
    const std::vector<int32_t> example = SortExample(task, seed, k);
    const int64_t take = std::min(length, num_tokens - static_cast<int64_t>(tokens.size()));
    tokens.insert(tokens.end(), example.begin(), example.begin() + take);
  }
  std::string description = absl::StrCat(
      StreamName(seed), ": ", task.num_digits, " digits 0..", task.num_values - 1, ", separator ",
      task.separator(), ", sorted digits, end ", task.end_of_example(), "; ", num_tokens,
      " tokens, vocab ", task.vocab_size, ", loss floor ", task.LossFloor(), " nats/token");
  return TokenDataset(std::move(tokens), task.vocab_size, StreamName(seed), std::move(description));
}

}  // namespace loom::models::data
