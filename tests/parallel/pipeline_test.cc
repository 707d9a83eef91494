// Pipeline parallelism on ranks as threads: every schedule at pp 2 and 4 with pp and 2·pp
// micro-batches (DualPipe-V: 2·pp and 4·pp), pp × dp (every ZeRO stage), pp × tp, and bf16, against
// the single-rank run with the same micro-batches (gradient accumulation over them): losses,
// gradient norms, and every parameter on the rank that holds it.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <set>

#include "parallel/context.h"
#include "parallel/mesh.h"
#include "parallel/pipeline/schedules/schedules.h"
#include "runtime/parallel.h"
#include "tests/parallel/dp_checks.h"

namespace loom::parallel {
namespace {

using testing::OnRanks;
using testing::RunResult;
using testing::TrainOnMesh;

models::TrainOptions Options(int micro_batches) {
  models::TrainOptions o = testing::ReferenceOptions();
  o.num_layers = 8;  // enough blocks for zb-v's 8 stages at pp 4
  o.batch = 8;
  o.micro_batches = micro_batches;
  return o;
}

RunResult Reference(models::TrainOptions o) {
  o.grad_accum = o.micro_batches;
  o.micro_batches = 0;
  return testing::Train(o, nullptr);
}

class PipelineEquivalence : public ::testing::TestWithParam<std::string> {
 protected:
  void SetUp() override { runtime::SetNumThreads(1); }
};

// Micro-batches pp and 2·pp (DualPipe-V needs at least 2·pp: 2·pp and 4·pp where the batch of 8
// allows).
std::vector<int> MicroBatchCounts(const std::string& schedule, int pp) {
  if (schedule != "dualpipe-v") return {pp, 2 * pp};
  if (4 * pp > Options(1).batch) return {2 * pp};
  return {2 * pp, 4 * pp};
}

TEST_P(PipelineEquivalence, EveryScheduleMatchesOneRank) {
  for (int pp : {2, 4}) {
    for (int m : MicroBatchCounts(GetParam(), pp)) {
      models::TrainOptions o = Options(m);
      const RunResult reference = Reference(o);
      o.pp = pp;
      o.schedule = GetParam();
      testing::ExpectEquivalentOnRanks(
          reference, TrainOnMesh(o),
          GetParam() + " pp " + std::to_string(pp) + " m " + std::to_string(m),
          testing::kF32Tolerance);
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Schedules, PipelineEquivalence,
                         ::testing::ValuesIn(pipeline::ScheduleNames()), [](const auto& info) {
                           std::string name = info.param;
                           for (char& c : name) {
                             if (c == '-') c = '_';
                           }
                           return name;
                         });

// pp 2 with 4 micro-batches in layout `o` (Options(4) with its pp, dp, tp, ZeRO and schedule set)
// against the single-rank run `reference`: the tied embedding's two copies and the dp and tp sums
// add in other orders than one rank's accumulation, so the tensor-parallel tolerance.
void ExpectComposedMatchesOneRank(const RunResult& reference, const models::TrainOptions& o,
                                  const std::string& what) {
  testing::ExpectEquivalentOnRanks(reference, TrainOnMesh(o), what, testing::kTpF32Tolerance);
}

// Every ZeRO stage under zb-h1 (the tied embedding on two ranks), and ZeRO-3 under the V
// schedules (one rank holds both of its uses) and 1F1B: stage 2 reduce-scatters a gradient after
// its last W of the step, stage 3 also gathers each unit's parameters for every F, B and W.
TEST(PipelineComposition, PpTimesDpWithEveryZeroStage) {
  runtime::SetNumThreads(1);
  const RunResult reference = Reference(Options(4));
  for (const auto& [zero, schedule] : {std::pair<int, std::string>{0, "zb-h1"},
                                       {1, "zb-h1"},
                                       {2, "zb-h1"},
                                       {3, "zb-h1"},
                                       {3, "zb-v"},
                                       {3, "dualpipe-v"},
                                       {2, "1f1b"}}) {
    models::TrainOptions o = Options(4);
    o.pp = 2;
    o.dp = 2;
    o.zero = zero;
    o.schedule = schedule;
    ExpectComposedMatchesOneRank(reference, o,
                                 "pp 2 x dp 2 zero " + std::to_string(zero) + " " + schedule);
  }
}

// Tensor-parallel stages: every tp rank of a stage runs the same list, its layers' collectives
// over tp, and sends its copy (or, with sequence parallelism, its token rows) of the boundary
// activations to the same tp rank of the next stage.
TEST(PipelineComposition, PpTimesTp) {
  runtime::SetNumThreads(1);
  const RunResult reference = Reference(Options(4));
  for (const auto& [schedule, sp] :
       {std::pair<std::string, bool>{"1f1b", false}, {"zb-v", false}, {"zb-h1", true}}) {
    models::TrainOptions o = Options(4);
    o.pp = 2;
    o.tp = 2;
    o.sequence_parallel = sp;
    o.schedule = schedule;
    ExpectComposedMatchesOneRank(reference, o,
                                 "pp 2 x tp 2 " + schedule + (sp ? " sequence parallel" : ""));
  }
}

TEST(PipelineComposition, Bf16) {
  runtime::SetNumThreads(1);
  models::TrainOptions o = Options(4);
  o.precision = "bf16";
  const RunResult reference = Reference(o);
  o.pp = 2;
  o.schedule = "1f1b";
  testing::ExpectEquivalentOnRanks(reference, TrainOnMesh(o), "pp 2 bf16", testing::kBf16Tolerance);
}

TEST(PipelineOptions, BadLayoutsSayWhatToChange) {
  models::TrainOptions o = Options(4);
  o.pp = 4;
  o.num_layers = 0;  // tiny: 2 blocks
  EXPECT_THAT(std::string(models::ValidateTrainOptions(o).message()),
              ::testing::HasSubstr("cuts the model into 4 stages, but tiny has 2 blocks"));
  o = Options(3);
  o.pp = 2;
  EXPECT_THAT(std::string(models::ValidateTrainOptions(o).message()),
              ::testing::HasSubstr("--batch 8 must be a multiple of --dp 1 x --micro_batches 3"));
  o = Options(4);
  o.pp = 2;
  o.hsdp_shard = 1;
  EXPECT_THAT(std::string(models::ValidateTrainOptions(o).message()),
              ::testing::HasSubstr("--pp with --hsdp_shard is not supported yet"));
}

}  // namespace
}  // namespace loom::parallel
