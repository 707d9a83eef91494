// Data parallelism under mpirun (np 2 and 4; LOOM_COMM_BACKEND=shm|mpi|ring, default shm): every
// ZeRO stage at dp = the job's size against the single-rank run each rank computes on its own,
// and per-rank parameter, gradient and optimizer bytes against the ZeRO formulas.
#include <gtest/gtest.h>

#include <cstdio>
#include <cstdlib>
#include <memory>

#include "comm/world.h"
#include "runtime/allocator.h"
#include "runtime/base/check.h"
#include "runtime/parallel.h"
#include "tests/mpi_test_world.h"
#include "tests/parallel/dp_checks.h"

namespace loom::parallel {
namespace {

using runtime::Allocator;
using runtime::MemoryTag;
using testing::ReferenceOptions;
using testing::WithLayout;

std::unique_ptr<comm::Communicator> World() { return testing::MpiTestWorld(); }

TEST(DataParallelUnderMpirun, EveryStageMatchesTheSingleRankRun) {
  runtime::SetNumThreads(1);
  auto world = World();
  const int n = world->size();
  // The reference: this rank alone, the whole global batch (no communication).
  const testing::RunResult reference = testing::Train(ReferenceOptions(), nullptr);
  for (int zero = 0; zero <= 3; ++zero) {
    const std::string what = "dp " + std::to_string(n) + " zero " + std::to_string(zero);
    testing::ExpectEquivalent(
        reference, testing::Train(WithLayout(ReferenceOptions(), n, zero), world.get()), what);
  }
  testing::ExpectEquivalent(reference,
                            testing::Train(WithLayout(ReferenceOptions(), n, 3, 2), world.get()),
                            "dp " + std::to_string(n) + " zero 3 grad_accum 2");
}

// The same with the shm communicator's shared arena: gradient buckets (DDP), gathered
// parameters (ZeRO-1/2/3) live in memory the peers write directly, so the registered all-reduce
// and all-gather run (LOOM_SHM_REGISTERED_BYTES=0: at every size).
TEST(DataParallelUnderMpirun, EveryStageMatchesOnSharedBuffers) {
  const char* b = std::getenv("LOOM_COMM_BACKEND");
  if (b != nullptr && std::string(b) != "shm") GTEST_SKIP() << "the arena is the shm backend's";
  runtime::SetNumThreads(1);
  setenv("LOOM_SHM_ARENA_BYTES", "16777216", 1);
  setenv("LOOM_SHM_REGISTERED_BYTES", "0", 1);
  auto world = World();
  unsetenv("LOOM_SHM_ARENA_BYTES");
  unsetenv("LOOM_SHM_REGISTERED_BYTES");
  ASSERT_NE(world->shared_allocator(), nullptr);
  const int n = world->size();
  const testing::RunResult reference = testing::Train(ReferenceOptions(), nullptr);
  for (int zero = 0; zero <= 3; ++zero) {
    testing::ExpectEquivalent(
        reference, testing::Train(WithLayout(ReferenceOptions(), n, zero), world.get()),
        "shared buffers, dp " + std::to_string(n) + " zero " + std::to_string(zero));
  }
}

// f16 with an Inf injected into one gradient on rank 0 at step 3: every rank skips that step
// (same parameters before and after, the step count does not advance) and halves the scale.
TEST(DataParallelUnderMpirun, F16OverflowOnOneRankSkipsTheStepEverywhere) {
  runtime::SetNumThreads(1);
  auto world = World();
  const int n = world->size();
  models::TrainOptions o = WithLayout(ReferenceOptions(), n, 1);
  o.precision = "fp16";
  o.steps = 6;
  o.inject_overflow_step = 3;
  auto trainer = models::Trainer::Create(o, world.get());
  ASSERT_TRUE(trainer.ok()) << trainer.status();
  models::Trainer& t = **trainer;
  std::vector<float> before;
  int calls = 0;
  while (t.step() < o.steps) {
    const int64_t step_before = t.step();
    if (step_before == 2) {
      ASSERT_TRUE(t.GatherParameters().ok());
      const auto* p = t.model().Parameters().front();
      before.assign(p->value().data<float>(), p->value().data<float>() + p->value().numel());
    }
    auto m = t.Step();
    ASSERT_TRUE(m.ok()) << m.status();
    ++calls;
    if (calls <= 2) {
      EXPECT_FALSE(m->skipped) << "call " << calls;
    }
    if (calls == 3) {
      EXPECT_TRUE(m->skipped) << "rank " << world->rank();
      EXPECT_EQ(m->loss_scale, 65536.0f);
      EXPECT_EQ(t.step(), step_before);
      ASSERT_TRUE(t.GatherParameters().ok());
      const auto* p = t.model().Parameters().front();
      EXPECT_EQ(std::vector<float>(p->value().data<float>(),
                                   p->value().data<float>() + p->value().numel()),
                before);
    }
    if (calls == 4) {
      EXPECT_FALSE(m->skipped);
      EXPECT_EQ(m->loss_scale, 32768.0f);
    }
  }
  EXPECT_EQ(calls, 7);  // six applied steps and one skipped
}

int64_t Current(MemoryTag tag) { return Allocator::Default().Stats(tag).current_bytes; }

TEST(DataParallelUnderMpirun, PerRankBytesMatchTheZeroFormulas) {
  auto world = World();
  const int64_t n = world->size(), r = world->rank();
  for (const std::string precision : {"fp32", "bf16"})
    for (int zero = 0; zero <= 3; ++zero) {
      const bool mixed = precision != "fp32";
      const int64_t param0 = Current(MemoryTag::kParam), grad0 = Current(MemoryTag::kGrad),
                    opt0 = Current(MemoryTag::kOptimizer);
      models::TrainOptions o = WithLayout(ReferenceOptions(), n, zero);
      o.precision = precision;
      Allocator::Default().ResetPeaks();
      auto trainer = models::Trainer::Create(o, world.get());
      ASSERT_TRUE(trainer.ok()) << trainer.status();
      // Initialisation fills only what the rank holds: under ZeRO-3 the whole model never
      // exists on a rank, not even briefly.
      const int64_t init_peak = Allocator::Default().Stats(MemoryTag::kParam).peak_bytes - param0;
      for (int s = 0; s < 2; ++s) ASSERT_TRUE((*trainer)->Step().ok());
      // The formulas, from the bucket sizes: bucket b (numel_b elements) is padded to n·S_b and
      // rank r owns elements [r·S_b, (r+1)·S_b), of which min(S_b, numel_b - r·S_b) are real.
      const int64_t psi = (*trainer)->model().NumParameters();
      int64_t total = 0, shard = 0, owned = 0;
      for (int64_t numel : (*trainer)->data_parallel().BucketNumels()) {
        const int64_t s = (numel + n - 1) / n;
        total += numel;
        shard += s;
        owned += std::clamp<int64_t>(numel - r * s, 0, s);
      }
      ASSERT_EQ(total, psi);
      // f32: the parameters are the master values. Mixed: 2-byte working copies are the
      // parameters; the f32 master joins the optimizer state.
      const int64_t f32 = 4, width = mixed ? 2 : 4;
      const int64_t held = zero < 3 ? n * shard : shard;  // elements of the parameters
      // Mixed precision keeps only the master of the own shard from stage 1 on.
      const int64_t master = zero == 0 ? n * shard : shard;
      const int64_t want_param = width * held;
      const int64_t want_grad = zero == 0   ? f32 * n * shard
                                : zero == 1 ? f32 * n * shard + f32 * shard
                                            : f32 * shard;
      const int64_t want_opt = (zero == 0 ? 2 * f32 * psi : 2 * f32 * owned)  // AdamW m and v
                               + (mixed ? f32 * master : 0);                  // master
      const int64_t param = Current(MemoryTag::kParam) - param0;
      const int64_t grad = Current(MemoryTag::kGrad) - grad0;
      const int64_t opt = Current(MemoryTag::kOptimizer) - opt0;
      const std::string what =
          precision + " zero " + std::to_string(zero) + " rank " + std::to_string(r);
      EXPECT_EQ(param, want_param) << what;
      EXPECT_EQ(init_peak, want_param) << what << ": peak parameter bytes while initialising";
      EXPECT_EQ(grad, want_grad) << what;
      EXPECT_EQ(opt, want_opt) << what;
      if (r == 0) {
        std::printf(
            "%s zero %d, dp %lld, %lld parameters: per rank param %lld B, grad %lld B, "
            "optimizer %lld B\n",
            precision.c_str(), zero, static_cast<long long>(n), static_cast<long long>(psi),
            static_cast<long long>(param), static_cast<long long>(grad),
            static_cast<long long>(opt));
      }
    }
}

}  // namespace
}  // namespace loom::parallel
