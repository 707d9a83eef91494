// The synthetic sorting task: deterministic per (seed, example), every example is digits,
// separator, the digits sorted, end; and the documented loss floor equals the loss of the ideal
// predictor, computed here by enumerating every possible example.
#include "models/data/synthetic_task.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

#include "absl/types/span.h"
#include "runtime/base/check.h"

namespace loom::models::data {
namespace {

using ::testing::HasSubstr;

std::vector<int32_t> Tokens(const TokenDataset& d) {
  return std::vector<int32_t>(d.tokens().begin(), d.tokens().end());
}

TokenDataset MustMake(uint64_t seed, int64_t num_tokens, const SortTask& task = SortTask()) {
  absl::StatusOr<TokenDataset> d = MakeSyntheticDataset(seed, num_tokens, task);
  LOOM_CHECK(d.ok()) << d.status();
  return *std::move(d);
}

// The task's definition written independently of the generator: the digits, the separator, the
// digits in ascending order by counting, the end token.
std::vector<int32_t> ExampleFromDigits(const SortTask& task, const std::vector<int32_t>& digits) {
  std::vector<int32_t> example(digits);
  example.push_back(task.num_values);
  std::vector<int> count(task.num_values, 0);
  for (int32_t d : digits) ++count[d];
  for (int v = 0; v < task.num_values; ++v) example.insert(example.end(), count[v], v);
  example.push_back(task.num_values + 1);
  return example;
}

// Mean cross-entropy (nats) of the Bayes-optimal predictor over the targets row[1..] of a row of
// tokens that begins at an example boundary. Examples are independent (distinct RNG counters), so
// the best prediction of a token depends only on the current example's earlier tokens: it is
// P(next | prefix) = #{digit strings whose example extends prefix + next} / #{... prefix}, counted
// here by enumerating all V^K digit strings.
double IdealRowLoss(const SortTask& task, absl::Span<const int32_t> row) {
  const int64_t L = task.example_length();
  const int K = task.num_digits;
  double total = 0;
  for (int64_t start = 0; start < static_cast<int64_t>(row.size()); start += L) {
    const int64_t len = std::min<int64_t>(L, static_cast<int64_t>(row.size()) - start);
    // agree[j] = number of digit strings whose example matches row[start, start + j) exactly.
    std::vector<int64_t> agree(len + 1, 0);
    std::vector<int32_t> digits(K, 0);
    while (true) {
      const std::vector<int32_t> example = ExampleFromDigits(task, digits);
      int64_t j = 0;
      while (j < len && example[j] == row[start + j]) ++j;
      for (int64_t i = 0; i <= j; ++i) ++agree[i];
      int i = 0;  // odometer over V^K
      while (i < K && ++digits[i] == task.num_values) digits[i++] = 0;
      if (i == K) break;
    }
    for (int64_t j = 0; j < len; ++j) {
      if (start + j == 0) continue;  // row[0] is an input only
      if (agree[j + 1] == 0) {
        ADD_FAILURE() << "token " << row[start + j] << " at row position " << start + j
                      << " is impossible under the task";
        return INFINITY;
      }
      total -= std::log(static_cast<double>(agree[j + 1]) / static_cast<double>(agree[j]));
    }
  }
  return total / static_cast<double>(row.size() - 1);
}

TEST(SyntheticTaskTest, ConstantsDescribeTheDefaultTask) {
  const SortTask task;
  EXPECT_EQ(task.example_length(), kSyntheticExampleLength);
  EXPECT_EQ(task.example_length(), 16);
  EXPECT_EQ(task.vocab_size, kSyntheticVocabSize);
  EXPECT_EQ(task.separator(), 10);
  EXPECT_EQ(task.end_of_example(), 11);
  EXPECT_NEAR(kSyntheticLossFloor, 7 * std::log(10.0) / 16, 1e-15);
  EXPECT_NEAR(task.LossFloor(), kSyntheticLossFloor, 1e-15);
  EXPECT_NEAR(kSyntheticLossThreshold, kSyntheticLossFloor + 0.25, 1e-15);
  EXPECT_LT(kSyntheticLossThreshold, std::log(16.0));
}

TEST(SyntheticTaskTest, SameSeedSameStreamAndExamplesIndependentOfLength) {
  const TokenDataset a = MustMake(1337, 5003);
  const TokenDataset b = MustMake(1337, 5003);
  EXPECT_EQ(Tokens(a), Tokens(b));
  EXPECT_EQ(a.size(), 5003);
  EXPECT_EQ(a.vocab_size(), 16);
  EXPECT_EQ(a.name(), "synthetic sort task (seed 1337)");

  // A shorter stream is a prefix of the longer one; any example can be generated alone.
  const TokenDataset shorter = MustMake(1337, 1000);
  const std::vector<int32_t> full = Tokens(a);
  EXPECT_EQ(Tokens(shorter), std::vector<int32_t>(full.begin(), full.begin() + 1000));
  for (int64_t k : {0, 1, 62, 250, 311}) {
    const std::vector<int32_t> alone = SortExample(SortTask(), 1337, k);
    EXPECT_EQ(alone, std::vector<int32_t>(full.begin() + 16 * k, full.begin() + 16 * k + 16))
        << "example " << k;
  }
}

TEST(SyntheticTaskTest, DifferentSeedsGiveDifferentExamples) {
  const std::vector<int32_t> a = Tokens(MustMake(1, 16 * 1000));
  const std::vector<int32_t> b = Tokens(MustMake(2, 16 * 1000));
  int same = 0;
  for (int k = 0; k < 1000; ++k) {
    same += std::equal(a.begin() + 16 * k, a.begin() + 16 * k + 7, b.begin() + 16 * k);
  }
  EXPECT_LE(same, 2);  // 10^-7 chance per example
}

TEST(SyntheticTaskTest, EveryExampleIsDigitsSeparatorSortedEnd) {
  for (const SortTask& task : {SortTask(), SortTask{3, 4, 6}, SortTask{12, 100, 128}}) {
    const int64_t L = task.example_length();
    const TokenDataset d = MustMake(99, L * 500 + 5, task);  // ends with a cut example
    const std::vector<int32_t> t = Tokens(d);
    for (int64_t k = 0; k < 500; ++k) {
      const std::vector<int32_t> example(t.begin() + L * k, t.begin() + L * (k + 1));
      const std::vector<int32_t> digits(example.begin(), example.begin() + task.num_digits);
      for (int32_t digit : digits) ASSERT_TRUE(digit >= 0 && digit < task.num_values);
      ASSERT_EQ(example, ExampleFromDigits(task, digits)) << "example " << k;
    }
    const std::vector<int32_t> last = SortExample(task, 99, 500);
    EXPECT_EQ(std::vector<int32_t>(t.begin() + L * 500, t.end()),
              std::vector<int32_t>(last.begin(), last.begin() + 5));
  }
}

TEST(SyntheticTaskTest, DigitsAreUniform) {
  const TokenDataset d = MustMake(5, 16 * 20000);
  std::vector<int64_t> count(10, 0);
  for (int64_t k = 0; k < 20000; ++k) {
    for (int i = 0; i < 7; ++i) ++count[d.tokens()[16 * k + i]];
  }
  const double expected = 20000.0 * 7 / 10;
  double chi2 = 0;
  for (int64_t c : count) chi2 += (c - expected) * (c - expected) / expected;
  EXPECT_LT(chi2, 33.7);  // 9 degrees of freedom: p = 1e-4
}

TEST(SyntheticTaskTest, FloorEqualsTheIdealPredictorsLossOnSmallTasks) {
  // Rows of two examples and one more token, as a batch row of T = 2L would be.
  for (const SortTask& task : {SortTask{1, 2, 4}, SortTask{2, 3, 5}, SortTask{3, 4, 6},
                               SortTask{4, 5, 8}, SortTask{3, 10, 16}, SortTask{5, 3, 5}}) {
    const int64_t L = task.example_length();
    const TokenDataset d = MustMake(2024, 8 * L + 1, task);
    for (int64_t row = 0; row < 4; ++row) {
      const absl::Span<const int32_t> tokens = d.tokens().subspan(row * 2 * L, 2 * L + 1);
      EXPECT_NEAR(IdealRowLoss(task, tokens), task.LossFloor(), 1e-12)
          << "K=" << task.num_digits << " V=" << task.num_values << " row " << row;
    }
  }
}

TEST(SyntheticTaskTest, FloorEqualsTheIdealPredictorsLossOnTheDefaultTask) {
  // One row of T = 16 (all 10^7 digit strings enumerated per example).
  const TokenDataset d = MustMake(1337, 17);
  EXPECT_NEAR(IdealRowLoss(SortTask(), d.tokens()), kSyntheticLossFloor, 1e-12);
}

TEST(SyntheticTaskTest, ReferencePointsInTheHeader) {
  // Entropy of the multiset of 7 uniform digits, by enumerating the digit counts (compositions of
  // 7 into 10 parts) with their multinomial probabilities.
  double entropy = 0, total = 0;
  std::vector<int> counts(10, 0);
  auto visit = [&](auto&& self, int value, int left) -> void {
    if (value == 9) {
      counts[9] = left;
      double p = 5040.0 / std::pow(10.0, 7);  // 7! / 10^7
      for (int c : counts) p /= std::tgamma(c + 1.0);
      total += p;
      entropy -= p * std::log(p);
      return;
    }
    for (int c = 0; c <= left; ++c) {
      counts[value] = c;
      self(self, value + 1, left - c);
    }
  };
  visit(visit, 0, 7);
  EXPECT_NEAR(total, 1.0, 1e-12);
  EXPECT_NEAR(entropy, 8.954, 5e-4);
  EXPECT_NEAR((7 * std::log(10.0) + entropy) / 16, 1.567, 5e-4);
  EXPECT_NEAR(14 * std::log(10.0) / 16, 2.015, 5e-4);
  EXPECT_NEAR(kSyntheticLossFloor, 1.007, 5e-4);
  EXPECT_NEAR(kSyntheticLossThreshold, 1.257, 5e-4);
  EXPECT_NEAR(std::log(16.0), 2.773, 5e-4);
}

TEST(SyntheticTaskTest, InvalidRequestsAreErrors) {
  absl::StatusOr<TokenDataset> empty = MakeSyntheticDataset(1, 0);
  ASSERT_FALSE(empty.ok());
  EXPECT_EQ(empty.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(empty.status().message()),
              HasSubstr("synthetic sort task (seed 1): num_tokens 0 must be at least 1"));

  absl::StatusOr<TokenDataset> small_vocab = MakeSyntheticDataset(1, 10, SortTask{7, 10, 11});
  ASSERT_FALSE(small_vocab.ok());
  EXPECT_THAT(std::string(small_vocab.status().message()),
              HasSubstr("vocab_size 11 is below num_values + 2 = 12"));
  EXPECT_FALSE((SortTask{0, 10, 16}.Validate().ok()));
  EXPECT_FALSE((SortTask{7, 0, 16}.Validate().ok()));
  EXPECT_TRUE(SortTask().Validate().ok());
}

}  // namespace
}  // namespace loom::models::data
