// Tensor parallelism under mpirun (np 2 and 4; LOOM_COMM_BACKEND=shm|hier): tp = the job's size,
// and tp 2 × dp 2 with ZeRO 1 at np 4, against the single-rank run each rank computes on its own;
// per-rank parameter and optimizer bytes against the formula for the split.
#include <gtest/gtest.h>

#include <cstdio>
#include <cstdlib>
#include <memory>

#include "comm/world.h"
#include "models/gpt.h"
#include "parallel/context.h"
#include "parallel/mesh.h"
#include "runtime/allocator.h"
#include "runtime/base/check.h"
#include "runtime/parallel.h"
#include "tests/mpi_test_world.h"
#include "tests/parallel/dp_checks.h"
#include "tests/runtime/kernels/test_util.h"

namespace loom::parallel {
namespace {

using runtime::Allocator;
using runtime::MemoryTag;
using runtime::Tensor;

std::unique_ptr<comm::Communicator> World() { return testing::MpiTestWorld(); }

models::TrainOptions Options(int tp, int dp, int zero) {
  models::TrainOptions o = testing::ReferenceOptions();
  o.vocab_size = 67;  // uneven vocabulary shards at tp 2 and 4
  o.tp = tp;
  o.dp = dp;
  o.zero = zero;
  return o;
}

TEST(TensorParallelUnderMpirun, LayoutsMatchTheSingleRankRun) {
  runtime::SetNumThreads(1);
  auto world = World();
  const int n = world->size();
  const testing::RunResult reference = testing::Train(Options(1, 1, 0), nullptr);
  std::vector<models::TrainOptions> layouts = {Options(n, 1, 0), Options(n, 1, 0)};
  layouts[1].sequence_parallel = true;
  if (n == 4) layouts.push_back(Options(2, 2, 1));
  for (const models::TrainOptions& o : layouts) {
    auto mesh = Mesh::Create(*world, MeshShape{.dp = o.dp, .tp = o.tp});
    ASSERT_TRUE(mesh.ok()) << mesh.status();
    testing::ExpectEquivalent(reference, testing::Train(o, ParallelContext::FromMesh(**mesh)),
                              "tp " + std::to_string(o.tp) + " x dp " + std::to_string(o.dp) +
                                  " zero " + std::to_string(o.zero) +
                                  (o.sequence_parallel ? " sequence parallel" : ""),
                              testing::kTpF32Tolerance);
  }
}

int64_t Current(MemoryTag tag) { return Allocator::Default().Stats(tag).current_bytes; }

// Parameter elements rank r of tp holds, from the tiny config's shapes (V = 67, C = 64, context
// 64, 2 layers, MLP 4C): the vocabulary rows split unevenly (the first V % tp ranks one more),
// heads and MLP columns evenly, norms, position embeddings and row-parallel biases whole.
int64_t HeldElements(int r, int tp) {
  const int64_t v = 67, c = 64, ctx = 64, layers = 2, h = 4 * c;
  const int64_t rows = v / tp + (r < v % tp ? 1 : 0);
  const int64_t block = 2 * c                          // ln_1
                        + c * 3 * c / tp + 3 * c / tp  // c_attn
                        + c / tp * c + c               // attn.c_proj
                        + 2 * c                        // ln_2
                        + c * h / tp + h / tp          // c_fc
                        + h / tp * c + c;              // mlp.c_proj
  return rows * c + ctx * c + layers * block + 2 * c;
}

TEST(TensorParallelUnderMpirun, PerRankBytesMatchTheSplit) {
  auto world = World();
  const int n = world->size(), r = world->rank();
  const int64_t param0 = Current(MemoryTag::kParam), opt0 = Current(MemoryTag::kOptimizer);
  const models::TrainOptions o = Options(n, 1, 0);
  auto mesh = Mesh::Create(*world, MeshShape{.dp = 1, .tp = n});
  ASSERT_TRUE(mesh.ok()) << mesh.status();
  auto trainer = models::Trainer::Create(o, ParallelContext::FromMesh(**mesh));
  ASSERT_TRUE(trainer.ok()) << trainer.status();
  for (int s = 0; s < 2; ++s) ASSERT_TRUE((*trainer)->Step().ok());
  const int64_t held = HeldElements(r, n);
  EXPECT_EQ(Current(MemoryTag::kParam) - param0, 4 * held) << "rank " << r;
  EXPECT_EQ(Current(MemoryTag::kOptimizer) - opt0, 2 * 4 * held) << "rank " << r;  // AdamW m, v
  EXPECT_LT(held, HeldElements(0, 1)) << "a tp rank holds less than the whole model";
  if (r == 0) {
    std::printf("tp %d: rank 0 holds %lld of %lld parameters (%.1f%%)\n", n,
                static_cast<long long>(held), static_cast<long long>(HeldElements(0, 1)),
                100.0 * static_cast<double>(held) / static_cast<double>(HeldElements(0, 1)));
  }
}

// Sequence parallelism shards what backward keeps between the tensor-parallel regions: per token,
// each block's ln_1 and ln_2 inputs and the inputs of c_attn and c_fc (4 C floats) plus the two
// norms' mean and rstd (4), and ln_f's input and statistics and the LM head's input (2 C + 2).
// The stash after a forward pass shrinks by exactly those bytes times (1 - 1/tp); everything else
// (q, k, v, attention probabilities, MLP hidden, logits) is split over tp either way. And no rank
// ever allocates a [tokens, vocab] tensor: the largest single allocation of any tag through a
// forward and backward stays below it.
TEST(TensorParallelUnderMpirun, SequenceParallelShrinksTheStashAndNoRankHoldsFullLogits) {
  auto world = World();
  const int t = world->size();
  models::GptConfig config = *models::GptConfig::Preset("tiny");
  config.vocab_size = 4096;  // logits larger than any other activation
  const int64_t b = 8, s = 32, n = b * s, c = config.dim, layers = config.num_layers;
  const Tensor inputs = runtime::kernels::testing::RandomIds({b, s}, config.vocab_size, 3);
  const Tensor targets = runtime::kernels::testing::RandomIds({b, s}, config.vocab_size, 4);
  int64_t stash_bytes[2] = {0, 0};
  for (bool sp : {false, true}) {
    models::GptModel model(config, {.group = world.get(), .sequence_parallel = sp});
    model.Initialize(5);
    Stash stash;
    Allocator::Default().ResetPeaks();
    model.ForwardLoss(stash, inputs, targets);
    stash_bytes[sp] = stash.bytes();
    model.Backward(stash, 1.0f);
    for (int tag = 0; tag < runtime::kNumMemoryTags; ++tag) {
      const int64_t largest = Allocator::Default().Stats(static_cast<MemoryTag>(tag)).largest_bytes;
      EXPECT_LT(largest, n * config.vocab_size * 4)
          << runtime::MemoryTagName(static_cast<MemoryTag>(tag)) << (sp ? " with SP" : "");
    }
    EXPECT_GE(Allocator::Default().Stats(MemoryTag::kActivation).largest_bytes,
              n * (config.vocab_size / t) * 4)
        << "the local logits are the largest activation";
  }
  const int64_t token_region = layers * (4 * c + 4) + 2 * c + 2;
  EXPECT_EQ(stash_bytes[0] - stash_bytes[1], 4 * (n - n / t) * token_region);
  if (world->rank() == 0) {
    std::printf("tp %d: stash after forward %lld B without SP, %lld B with SP (%.2fx less)\n", t,
                static_cast<long long>(stash_bytes[0]), static_cast<long long>(stash_bytes[1]),
                static_cast<double>(stash_bytes[0]) / static_cast<double>(stash_bytes[1]));
  }
}

}  // namespace
}  // namespace loom::parallel
