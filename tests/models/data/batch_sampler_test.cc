// Batch sampling on a dataset whose token i is i, so every batch is known by formula: sequential
// steps, ranks reading disjoint parts of one global batch, wrap-around, resume, eval batches.
#include "models/data/batch_sampler.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cstdint>
#include <numeric>
#include <string>
#include <vector>

#include "models/data/synthetic_task.h"
#include "runtime/base/check.h"

namespace loom::models::data {
namespace {

using runtime::Allocator;
using runtime::DType;
using runtime::MemoryTag;
using ::testing::HasSubstr;

// Tokens 0, 1, ..., n - 1.
TokenDataset Iota(int64_t n) {
  std::vector<int32_t> tokens(n);
  std::iota(tokens.begin(), tokens.end(), 0);
  return TokenDataset(std::move(tokens), static_cast<int>(n), "iota", "iota");
}

std::vector<int32_t> Values(const runtime::Tensor& t) {
  return std::vector<int32_t>(t.data<int32_t>(), t.data<int32_t>() + t.numel());
}

// The batch starting at token `start` of Iota: inputs[b][t] = start + b·T + t, targets one more.
void ExpectIotaBatch(const Batch& batch, int64_t start, int64_t B, int64_t T) {
  ASSERT_EQ(batch.inputs.shape(), (runtime::Shape{B, T}));
  ASSERT_EQ(batch.targets.shape(), (runtime::Shape{B, T}));
  ASSERT_EQ(batch.inputs.dtype(), DType::kI32);
  ASSERT_EQ(batch.targets.dtype(), DType::kI32);
  const int32_t* in = batch.inputs.data<int32_t>();
  const int32_t* tg = batch.targets.data<int32_t>();
  for (int64_t b = 0; b < B; ++b) {
    for (int64_t t = 0; t < T; ++t) {
      ASSERT_EQ(in[b * T + t], start + b * T + t) << "b=" << b << " t=" << t;
      ASSERT_EQ(tg[b * T + t], start + b * T + t + 1) << "b=" << b << " t=" << t;
    }
  }
}

BatchSampler MustCreate(const TokenDataset& d, int64_t B, int64_t T, int rank, int world) {
  absl::StatusOr<BatchSampler> s = BatchSampler::Create(d, B, T, rank, world);
  LOOM_CHECK(s.ok()) << s.status();
  return *std::move(s);
}

TEST(BatchSamplerTest, SingleRankReadsSequentiallyAndWraps) {
  // 100 tokens, B·T = 10: steps start at 0, 10, ..., 80 (the step at 90 would need token 100),
  // then wrap to 0.
  const TokenDataset d = Iota(100);
  BatchSampler sampler = MustCreate(d, 2, 5, 0, 1);
  EXPECT_EQ(sampler.position(), 0);
  for (int64_t step = 0; step < 25; ++step) {
    const int64_t start = 10 * (step % 9);
    ASSERT_EQ(sampler.position(), start) << "step " << step;
    ExpectIotaBatch(sampler.Next(), start, 2, 5);
  }
}

TEST(BatchSamplerTest, ExactFitUsesTheLastToken) {
  // 101 tokens hold ten steps of B·T = 10 exactly: the last reads tokens [90, 101).
  const TokenDataset d = Iota(101);
  BatchSampler sampler = MustCreate(d, 2, 5, 0, 1);
  for (int64_t step = 0; step < 10; ++step) ExpectIotaBatch(sampler.Next(), 10 * step, 2, 5);
  EXPECT_EQ(sampler.position(), 0);
  ExpectIotaBatch(sampler.Next(), 0, 2, 5);
}

TEST(BatchSamplerTest, RanksSplitTheSingleRankStreamOfWorldTimesB) {
  const int64_t B = 2, T = 4;
  for (int world : {1, 2, 3, 4}) {
    const TokenDataset d = Iota(200 + 7 * world);
    BatchSampler whole = MustCreate(d, world * B, T, 0, 1);
    std::vector<BatchSampler> ranks;
    for (int r = 0; r < world; ++r) ranks.push_back(MustCreate(d, B, T, r, world));
    for (int step = 0; step < 30; ++step) {  // several epochs
      const int64_t position = whole.position();
      const std::vector<int32_t> whole_inputs = Values(whole.Next().inputs);
      std::vector<int32_t> joined;
      for (int r = 0; r < world; ++r) {
        ASSERT_EQ(ranks[r].position(), position) << "world " << world << " rank " << r;
        const Batch batch = ranks[r].Next();
        ExpectIotaBatch(batch, position + r * B * T, B, T);
        const std::vector<int32_t> inputs = Values(batch.inputs);
        joined.insert(joined.end(), inputs.begin(), inputs.end());
      }
      // Rank r holds rows [r·B, (r+1)·B) of the world·B batch: disjoint, together the whole.
      ASSERT_EQ(joined, whole_inputs) << "world " << world << " step " << step;
    }
  }
}

TEST(BatchSamplerTest, ResumeFromSavedPositionContinuesTheStream) {
  const TokenDataset d = Iota(1000);
  for (int64_t k : {0, 1, 7, 30, 31}) {
    BatchSampler original = MustCreate(d, 3, 11, 1, 2);
    for (int64_t i = 0; i < k; ++i) original.Next();
    const int64_t saved = original.position();

    BatchSampler resumed = MustCreate(d, 3, 11, 1, 2);
    ASSERT_TRUE(resumed.SetPosition(saved).ok());
    for (int i = 0; i < 40; ++i) {  // crosses a wrap (15 steps of 66 tokens per epoch)
      ASSERT_EQ(Values(resumed.Next().inputs), Values(original.Next().inputs))
          << "after " << k << " + " << i;
      ASSERT_EQ(resumed.position(), original.position());
    }
  }
}

TEST(BatchSamplerTest, SetPositionValidatesTheRange) {
  const TokenDataset d = Iota(100);
  BatchSampler sampler = MustCreate(d, 2, 5, 0, 2);  // a step reads 21 tokens
  EXPECT_TRUE(sampler.SetPosition(79).ok());
  ExpectIotaBatch(sampler.Next(), 79, 2, 5);
  EXPECT_EQ(sampler.position(), 0);  // 99 + 21 > 100

  for (int64_t bad : {-1, 80, 1000}) {
    const absl::Status status = sampler.SetPosition(bad);
    EXPECT_EQ(status.code(), absl::StatusCode::kOutOfRange) << bad;
    EXPECT_THAT(std::string(status.message()),
                HasSubstr("iota: data position " + std::to_string(bad) + " is out of range"));
    EXPECT_THAT(std::string(status.message()), HasSubstr("must be in [0, 79]"));
  }
  EXPECT_EQ(sampler.position(), 0);
}

TEST(BatchSamplerTest, CreateRejectsBadShapesRanksAndShortFiles) {
  const TokenDataset d = Iota(30);
  struct Case {
    int64_t B, T;
    int rank, world;
    absl::StatusCode code;
    const char* message;
  };
  const absl::StatusCode kInvalid = absl::StatusCode::kInvalidArgument;
  for (const Case& c : {
           Case{0, 5, 0, 1, kInvalid, "iota: batch size B=0 and sequence length T=5"},
           Case{2, 0, 0, 1, kInvalid, "B=2 and sequence length T=0 must both be at least 1"},
           Case{2, 5, 2, 2, kInvalid, "iota: rank 2 is outside [0, world_size=2)"},
           Case{2, 5, -1, 2, kInvalid, "rank -1 is outside"},
           Case{2, 5, 0, 0, kInvalid, "rank 0 is outside [0, world_size=0)"},
           Case{3, 5, 1, 2, kInvalid, "world_size=2 x B=3 x T=5 needs 31 tokens"},
           Case{int64_t{1} << 40, int64_t{1} << 40, 0, 1, kInvalid, "needs more than 2^63"},
       }) {
    absl::StatusOr<BatchSampler> s = BatchSampler::Create(d, c.B, c.T, c.rank, c.world);
    ASSERT_FALSE(s.ok()) << c.message;
    EXPECT_EQ(s.status().code(), c.code) << c.message;
    EXPECT_THAT(std::string(s.status().message()), HasSubstr(c.message));
  }
  absl::StatusOr<BatchSampler> short_file = BatchSampler::Create(d, 3, 5, 1, 2);
  EXPECT_THAT(std::string(short_file.status().message()), HasSubstr("file has 30"));
  EXPECT_TRUE(BatchSampler::Create(d, 29, 1, 0, 1).ok());  // exactly B·T + 1 tokens
}

TEST(BatchSamplerTest, BatchesAreAccountedToTheGivenAllocator) {
  const TokenDataset d = Iota(100);
  Allocator allocator;
  absl::StatusOr<BatchSampler> sampler = BatchSampler::Create(d, 2, 5, 0, 1, &allocator);
  ASSERT_TRUE(sampler.ok());
  {
    const Batch batch = sampler->Next();
    EXPECT_EQ(batch.inputs.tag(), MemoryTag::kActivation);
    EXPECT_EQ(allocator.Stats(MemoryTag::kActivation).current_bytes, 2 * 2 * 5 * 4);
  }
  EXPECT_EQ(allocator.Stats(MemoryTag::kActivation).current_bytes, 0);
  {
    absl::StatusOr<Batch> eval = EvalBatch(d, 2, 5, 0, &allocator);
    ASSERT_TRUE(eval.ok());
    EXPECT_EQ(allocator.Stats(MemoryTag::kActivation).current_bytes, 2 * 2 * 5 * 4);
  }
}

TEST(BatchSamplerTest, EvalBatchesAreTheFirstBatchesOfTheFile) {
  const TokenDataset d = Iota(101);
  EXPECT_EQ(NumEvalBatches(d, 2, 5), 10);
  for (int64_t i = 0; i < 10; ++i) {
    absl::StatusOr<Batch> batch = EvalBatch(d, 2, 5, i);
    ASSERT_TRUE(batch.ok()) << batch.status();
    ExpectIotaBatch(*batch, 10 * i, 2, 5);
  }
  absl::StatusOr<Batch> past_end = EvalBatch(d, 2, 5, 10);
  ASSERT_FALSE(past_end.ok());
  EXPECT_EQ(past_end.status().code(), absl::StatusCode::kOutOfRange);
  EXPECT_THAT(std::string(past_end.status().message()),
              HasSubstr("iota: eval batch 10 (B=2, T=5) needs 111 tokens, file has 101"));

  EXPECT_EQ(EvalBatch(d, 2, 5, -1).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(EvalBatch(d, 0, 5, 0).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(EvalBatch(d, 2, 5, INT64_MAX).status().code(), absl::StatusCode::kOutOfRange);
  EXPECT_EQ(NumEvalBatches(Iota(100), 2, 5), 9);
  EXPECT_EQ(NumEvalBatches(d, 0, 5), 0);
}

TEST(BatchSamplerTest, SyntheticRowsStartAtExampleBoundariesWhenTIsAMultipleOf16) {
  // The synthetic task's loss floor is exact per row because rows start at example boundaries.
  absl::StatusOr<TokenDataset> d = MakeSyntheticDataset(3, 10000);
  ASSERT_TRUE(d.ok());
  const int64_t B = 4, T = 32;
  for (int world : {1, 3}) {
    for (int rank = 0; rank < world; ++rank) {
      BatchSampler sampler = MustCreate(*d, B, T, rank, world);
      for (int step = 0; step < 200; ++step) {  // crosses wraps
        const std::vector<int32_t> inputs = Values(sampler.Next().inputs);
        for (int64_t b = 0; b < B; ++b) {
          ASSERT_LT(inputs[b * T], 10);           // a digit starts the row
          ASSERT_EQ(inputs[b * T + 7], 10);       // the separator
          ASSERT_EQ(inputs[b * T + 15], 11);      // the end of the example
          ASSERT_EQ(inputs[b * T + 16 + 7], 10);  // and of the next one
        }
      }
    }
  }
}

}  // namespace
}  // namespace loom::models::data
