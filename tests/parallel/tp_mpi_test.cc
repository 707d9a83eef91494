// Tensor parallelism under mpirun (np 2 and 4; LOOM_COMM_BACKEND=shm|hier): tp = the job's size,
// and tp 2 × dp 2 with ZeRO 1 at np 4, against the single-rank run each rank computes on its own;
// per-rank parameter and optimizer bytes against the formula for the split.
#include <gtest/gtest.h>

#include <cstdio>
#include <cstdlib>
#include <memory>

#include "comm/world.h"
#include "parallel/context.h"
#include "parallel/mesh.h"
#include "runtime/allocator.h"
#include "runtime/base/check.h"
#include "runtime/parallel.h"
#include "tests/parallel/dp_checks.h"

namespace loom::parallel {
namespace {

using runtime::Allocator;
using runtime::MemoryTag;

std::unique_ptr<comm::Communicator> World() {
  const char* b = std::getenv("LOOM_COMM_BACKEND");
  comm::CommOptions options;
  options.timeout = absl::Seconds(120);  // a hang becomes MPI_Abort, so mpirun fails
  auto world = comm::MakeWorldCommunicator(b == nullptr ? "shm" : b, options);
  LOOM_CHECK(world.ok()) << world.status();
  return std::move(world).value();
}

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
  std::vector<models::TrainOptions> layouts = {Options(n, 1, 0)};
  if (n == 4) layouts.push_back(Options(2, 2, 1));
  for (const models::TrainOptions& o : layouts) {
    auto mesh = Mesh::Create(*world, MeshShape{.dp = o.dp, .tp = o.tp});
    ASSERT_TRUE(mesh.ok()) << mesh.status();
    testing::ExpectEquivalent(reference, testing::Train(o, ParallelContext::FromMesh(**mesh)),
                              "tp " + std::to_string(o.tp) + " x dp " + std::to_string(o.dp) +
                                  " zero " + std::to_string(o.zero),
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

}  // namespace
}  // namespace loom::parallel
