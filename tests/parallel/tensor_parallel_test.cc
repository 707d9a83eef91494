// Tensor parallelism on ranks as threads (the `local` backend): the shard layout against a direct
// index computation, initial shards bitwise equal to slices of the unsharded parameters for every
// GPT-2 parameter kind, and training at tp 2 and 4 (and tp × dp with ZeRO) against the single-rank
// run. The equivalence suite's mpirun side is in tests/examples (train_gpt --tp).
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <map>
#include <thread>
#include <tuple>

#include "comm/local/local_backend.h"
#include "models/gpt.h"
#include "models/gpt_weights.h"
#include "parallel/context.h"
#include "parallel/mesh.h"
#include "parallel/shard.h"
#include "runtime/parallel.h"
#include "tests/parallel/dp_checks.h"
#include "tests/runtime/kernels/test_util.h"

namespace loom::parallel {
namespace {

using runtime::DType;
using runtime::MemoryTag;
using runtime::Shape;
using runtime::Tensor;
using testing::ExpectEquivalent;
using testing::OnMesh;
using testing::OnRanks;
using testing::ReferenceOptions;
using testing::RunResult;
using testing::Train;
using testing::TrainOnMesh;

// The element of the whole tensor that local element `i` of rank `index`'s shard is, computed
// directly from the definition (parts of dim, each cut into `count` runs of whole blocks, the
// first n % count one block longer), one coordinate at a time.
int64_t GlobalIndexOf(const Shape& global, int dim, int parts, int64_t block, int index, int count,
                      int64_t i) {
  const int64_t part = global[dim] / parts, blocks = part / block;
  std::vector<int64_t> sizes;
  for (int r = 0; r < count; ++r) sizes.push_back(blocks / count + (r < blocks % count ? 1 : 0));
  int64_t begin = 0;
  for (int r = 0; r < index; ++r) begin += sizes[r] * block;
  const int64_t mine = sizes[index] * block;
  Shape local = global;
  local[dim] = parts * mine;
  // Row-major coordinates of i in the local shape, mapped one by one.
  std::vector<int64_t> coord(global.size());
  for (int d = static_cast<int>(global.size()) - 1; d >= 0; --d) {
    coord[d] = i % local[d];
    i /= local[d];
  }
  coord[dim] = (coord[dim] / mine) * part + begin + coord[dim] % mine;
  int64_t g = 0;
  for (size_t d = 0; d < global.size(); ++d) g = g * global[d] + coord[d];
  return g;
}

Tensor Iota(const Shape& shape) {
  Tensor t = Tensor::Empty(shape, DType::kF32, MemoryTag::kWorkspace);
  for (int64_t i = 0; i < t.numel(); ++i) t.data<float>()[i] = static_cast<float>(i);
  return t;
}

TEST(ShardLayout, BalancedSplitGivesTheFirstRanksTheRemainder) {
  // GPT-2's vocabulary over 4 ranks, without padding.
  using Range = std::pair<int64_t, int64_t>;
  EXPECT_EQ(BalancedRange(50257, 0, 4), Range(0, 12565));
  EXPECT_EQ(BalancedRange(50257, 1, 4), Range(12565, 25129));
  EXPECT_EQ(BalancedRange(50257, 3, 4), Range(37693, 50257));
  EXPECT_EQ(LocalShape({50257, 768}, ShardSpec::Split(0, "tp", 3, 4)), (Shape{12564, 768}));
}

TEST(ShardLayout, ExtractAndInsertMatchTheDirectIndexMapping) {
  struct Case {
    Shape global;
    int dim, parts;
    int64_t block;
    int count;
  };
  const Case cases[] = {
      {{6, 24}, 1, 3, 2, 2},    // c_attn: q, k, v of 4 heads of width 2 over 2 ranks
      {{6, 24}, 1, 3, 2, 4},    // one head per rank
      {{8, 6}, 0, 1, 2, 2},     // c_proj rows by head
      {{67, 5}, 0, 1, 1, 4},    // an uneven vocabulary (17, 17, 17, 16 rows)
      {{3, 10, 4}, 1, 1, 1, 3}  // a middle dimension, uneven
  };
  for (const Case& c : cases) {
    const Tensor whole = Iota(c.global);
    Tensor rebuilt = Tensor::Zeros(c.global, DType::kF32, MemoryTag::kWorkspace);
    for (int r = 0; r < c.count; ++r) {
      const ShardSpec spec = ShardSpec::Split(c.dim, "tp", r, c.count, c.parts, c.block);
      ASSERT_TRUE(spec.Check("t", c.global).ok()) << spec.ToString();
      Tensor local = Tensor::Empty(LocalShape(c.global, spec), DType::kF32, MemoryTag::kWorkspace);
      ExtractShard(whole, spec, local);
      for (int64_t i = 0; i < local.numel(); ++i) {
        ASSERT_EQ(local.data<float>()[i],
                  GlobalIndexOf(c.global, c.dim, c.parts, c.block, r, c.count, i))
            << spec.ToString() << " local element " << i;
      }
      InsertShard(local, spec, rebuilt);
    }
    EXPECT_EQ(rebuilt.ToF32Vector(), whole.ToF32Vector()) << "every element from exactly one rank";
  }
}

TEST(ShardLayout, RejectsSplitsThatDoNotFit) {
  EXPECT_THAT(std::string(ShardSpec::Split(1, "tp", 0, 2, 3, 4).Check("c_attn", {4, 30}).message()),
              ::testing::HasSubstr("not a multiple of parts x block"));
  EXPECT_THAT(std::string(ShardSpec::Split(0, "tp", 0, 8).Check("wte", {5, 4}).message()),
              ::testing::HasSubstr("cannot give each of 8 ranks one"));
}

TEST(ShardLayout, GatherShardsRebuildsTheWholeTensorOnEveryRank) {
  const Shape global{67, 3};
  const Tensor whole = Iota(global);
  OnRanks(3, [&](int rank, comm::Communicator& group) {
    const ShardSpec spec = ShardSpec::Split(0, "tp", rank, 3);
    Tensor local = Tensor::Empty(LocalShape(global, spec), DType::kF32, MemoryTag::kWorkspace);
    ExtractShard(whole, spec, local);
    auto gathered = GatherShards(local, global, spec, group);
    ASSERT_TRUE(gathered.ok()) << gathered.status();
    EXPECT_EQ(gathered->ToF32Vector(), whole.ToF32Vector()) << "rank " << rank;
  });
}

models::GptConfig TinyConfig(models::GptConfig::Mlp mlp) {
  models::GptConfig c = *models::GptConfig::Preset("tiny");
  c.vocab_size = 67;  // uneven over 2 and 4 ranks
  c.mlp = mlp;
  if (mlp == models::GptConfig::Mlp::kSwiGlu) c.dim = 96;  // hidden 8/3·96 = 256 splits by 4
  return c;
}

// Every parameter kind of GPT-2 (and the SwiGLU variant): each rank's initial shard, filled from
// the initializers without the whole, equals the slice of the unsharded model's parameter at the
// indices the direct mapping gives, bit for bit.
TEST(TensorParallelInit, ShardsAreSlicesOfTheUnshardedParameters) {
  for (auto mlp : {models::GptConfig::Mlp::kGelu, models::GptConfig::Mlp::kSwiGlu}) {
    const models::GptConfig config = TinyConfig(mlp);
    models::GptModel whole(config);
    whole.Initialize(7);
    for (int tp : {2, 4}) {
      OnRanks(tp, [&](int rank, comm::Communicator& group) {
        models::GptModel model(config, {.group = &group});
        model.Initialize(7);
        int split = 0;
        for (Parameter* p : model.Parameters()) {
          const Parameter* w = whole.FindParameter(p->name());
          ASSERT_NE(w, nullptr) << p->name();
          ASSERT_EQ(p->global_shape(), w->global_shape()) << p->name();
          const ShardSpec& s = p->shard_spec();
          split += s.is_split();
          for (int64_t i = 0; i < p->value().numel(); ++i) {
            const int64_t g = s.is_split() ? GlobalIndexOf(p->global_shape(), s.dim, s.parts,
                                                           s.block, rank, tp, i)
                                           : i;
            ASSERT_EQ(p->value().data<float>()[i], w->value().data<float>()[g])
                << p->name() << " " << s.ToString() << " local " << i;
          }
        }
        // wte, and per block c_attn.{weight,bias} and attn.c_proj.weight plus the MLP's three
        // (GELU: c_fc.{weight,bias}, c_proj.weight; SwiGLU: gate, up, down).
        EXPECT_EQ(split, 1 + config.num_layers * 6);
      });
    }
  }
}

TEST(TensorParallelInit, BadLayoutsSayWhichTpWouldWork) {
  const models::GptConfig small = *models::GptConfig::Preset("cpu-small");
  EXPECT_EQ(std::string(small.ValidateTensorParallel(4).message()),
            "tp=4 does not divide the 6 heads of cpu-small; choose tp in {1, 2, 3, 6}");
  models::TrainOptions o = ReferenceOptions();
  o.tp = 3;  // tiny has 4 heads
  EXPECT_THAT(std::string(models::ValidateTrainOptions(o).message()),
              ::testing::HasSubstr("tp=3 does not divide the 4 heads of tiny"));
  o.tp = 2;
  o.sequence_parallel = true;
  o.seq_len = 31;
  EXPECT_THAT(std::string(models::ValidateTrainOptions(o).message()),
              ::testing::HasSubstr("--sequence_parallel splits each sequence's 31 tokens over --tp "
                                   "2; choose a --seq_len that divides by 2"));
  o.tp = 1;
  EXPECT_THAT(std::string(models::ValidateTrainOptions(o).message()),
              ::testing::HasSubstr("it needs --tp >= 2"));
}

// The layers' math for both model variants (GELU + LayerNorm and SwiGLU + RMSNorm), with and
// without sequence parallelism: one forward and backward at tp 2 and 4 gives the single-rank
// loss and, gathered (and summed over tp where the spec says the gradient is partial), its
// gradients.
TEST(TensorParallelLayers, LossAndGradientsMatchOneRankForBothVariants) {
  runtime::SetNumThreads(1);
  for (auto [mlp, norm] :
       {std::pair{models::GptConfig::Mlp::kGelu, models::GptConfig::Norm::kLayerNorm},
        std::pair{models::GptConfig::Mlp::kSwiGlu, models::GptConfig::Norm::kRMSNorm}}) {
    models::GptConfig config = TinyConfig(mlp);
    config.norm = norm;
    const Tensor inputs = runtime::kernels::testing::RandomIds({4, 16}, 67, 1);
    const Tensor targets = runtime::kernels::testing::RandomIds({4, 16}, 67, 2);
    models::GptModel whole(config);
    whole.Initialize(9);
    Stash one;
    const float want_loss = whole.ForwardLoss(one, inputs, targets);
    whole.Backward(one, 1.0f);
    for (int tp : {2, 4}) {
      for (bool sp : {false, true}) {
        OnRanks(tp, [&](int rank, comm::Communicator& group) {
          models::GptModel model(config, {.group = &group, .sequence_parallel = sp});
          model.Initialize(9);
          Stash stash;
          const std::string what =
              "tp " + std::to_string(tp) + (sp ? " SP" : "") + " rank " + std::to_string(rank);
          EXPECT_NEAR(model.ForwardLoss(stash, inputs, targets), want_loss, 1e-5) << what;
          model.Backward(stash, 1.0f);
          for (Parameter* p : model.Parameters()) {
            Tensor g = p->grad();
            if (p->shard_spec().grad_partial()) {
              ASSERT_TRUE(group.AllReduce(g, g, comm::ReduceOp::kSum)->Wait().ok());
            }
            auto got = GatherShards(g, p->global_shape(), p->shard_spec(), group);
            ASSERT_TRUE(got.ok()) << got.status();
            const std::vector<float> a = got->ToF32Vector();
            const std::vector<float> b = whole.FindParameter(p->name())->grad().ToF32Vector();
            double worst = 0.0, scale = 0.0;
            for (size_t i = 0; i < a.size(); ++i) {
              worst = std::max(worst, std::abs(static_cast<double>(a[i]) - b[i]));
              scale = std::max(scale, std::abs(static_cast<double>(b[i])));
            }
            EXPECT_LE(worst, 1e-5 * std::max(1.0, scale)) << what << " " << p->name();
          }
        });
      }
    }
  }
}

class TensorParallelEquivalence : public ::testing::Test {
 protected:
  static models::TrainOptions Options() {
    models::TrainOptions o = ReferenceOptions();
    o.vocab_size = 67;  // uneven vocabulary shards
    return o;
  }
  static void SetUpTestSuite() {
    runtime::SetNumThreads(1);
    reference_ = new RunResult(Train(Options(), nullptr));
  }
  static void TearDownTestSuite() { delete reference_; }

  // Trains `o` on dp × tp threads (mesh order tp-ep-dp-pp) and checks every rank.
  static void Check(const models::TrainOptions& o, const std::string& what,
                    const testing::Tolerance& tolerance = testing::kTpF32Tolerance,
                    const RunResult* reference = nullptr) {
    const std::vector<RunResult> results = TrainOnMesh(o);
    for (int r = 0; r < o.dp * o.tp; ++r) {
      ExpectEquivalent(reference != nullptr ? *reference : *reference_, results[r],
                       what + " rank " + std::to_string(r), tolerance);
    }
  }
  static RunResult* reference_;
};
RunResult* TensorParallelEquivalence::reference_ = nullptr;

TEST_F(TensorParallelEquivalence, Tp2) {
  models::TrainOptions o = Options();
  o.tp = 2;
  Check(o, "tp 2");  // GEMMs in 4 chunks pipelined with the collectives (the default)
  o.tp_chunks = 1;
  Check(o, "tp 2 unchunked");
}

// Flash attention (each rank its heads, no probabilities kept) against the single-rank run with
// flash attention, tp 2 with sequence parallelism and recompute.
TEST_F(TensorParallelEquivalence, FlashAttentionTp2SequenceParallelRecompute) {
  models::TrainOptions o = Options();
  o.attention = "flash";
  const RunResult reference = Train(o, nullptr);
  o.tp = 2;
  o.sequence_parallel = true;
  o.recompute = true;
  Check(o, "tp 2 sp recompute flash", testing::kTpF32Tolerance, &reference);
}

TEST_F(TensorParallelEquivalence, Tp4) {
  models::TrainOptions o = Options();
  o.tp = 4;
  Check(o, "tp 4");
}

TEST_F(TensorParallelEquivalence, Tp2Dp2EveryZeroStage) {
  models::TrainOptions o = Options();
  o.tp = 2;
  o.dp = 2;
  for (int zero : {0, 1, 2, 3}) {
    o.zero = zero;
    Check(o, "tp 2 x dp 2 zero " + std::to_string(zero));
  }
}

TEST_F(TensorParallelEquivalence, Tp2Recompute) {
  models::TrainOptions o = Options();
  o.tp = 2;
  o.recompute = true;
  Check(o, "tp 2 recompute");
}

TEST_F(TensorParallelEquivalence, SequenceParallelTp2AndTp4) {
  models::TrainOptions o = Options();
  o.sequence_parallel = true;
  for (int tp : {2, 4}) {
    o.tp = tp;
    Check(o, "tp " + std::to_string(tp) + " sequence parallel");
  }
  o.tp = 2;
  o.tp_chunks = 1;
  Check(o, "tp 2 sequence parallel unchunked");
}

TEST_F(TensorParallelEquivalence, SequenceParallelTp2Dp2Zero1And3) {
  models::TrainOptions o = Options();
  o.sequence_parallel = true;
  o.tp = 2;
  o.dp = 2;
  for (int zero : {1, 3}) {
    o.zero = zero;
    Check(o, "tp 2 x dp 2 sequence parallel zero " + std::to_string(zero));
  }
}

TEST_F(TensorParallelEquivalence, SequenceParallelWithRecomputeAndAccumulation) {
  models::TrainOptions o = Options();
  o.sequence_parallel = true;
  o.tp = 2;
  o.recompute = true;
  o.grad_accum = 2;
  const RunResult reference = Train(
      [&] {
        models::TrainOptions one = Options();
        one.grad_accum = 2;
        return one;
      }(),
      nullptr);
  Check(o, "tp 2 sequence parallel, recompute, grad_accum 2", testing::kTpF32Tolerance, &reference);
}

// Overlap changes when the GEMM chunks run relative to the collectives, not what they compute:
// on and off give the same bits, with and without SP, in f32 and bf16.
TEST(TensorParallelOverlap, OnAndOffGiveTheSameBits) {
  runtime::SetNumThreads(1);
  for (const auto& [tp, sp, precision] : {std::tuple<int, bool, std::string>{2, false, "fp32"},
                                          {2, true, "fp32"},
                                          {4, true, "fp32"},
                                          {2, true, "bf16"}}) {
    models::TrainOptions o = ReferenceOptions();
    o.vocab_size = 67;
    o.steps = 5;
    o.tp = tp;
    o.sequence_parallel = sp;
    o.precision = precision;
    o.tp_chunks = 3;
    const std::vector<RunResult> on = TrainOnMesh(o);
    o.tp_overlap = false;
    const std::vector<RunResult> off = TrainOnMesh(o);
    const std::string what =
        "tp " + std::to_string(tp) + (sp ? " sequence parallel " : " ") + precision;
    ASSERT_EQ(on[0].losses.size(), 5u) << what;
    EXPECT_EQ(on[0].losses, off[0].losses) << what;
    EXPECT_EQ(on[0].grad_norms, off[0].grad_norms) << what;
    EXPECT_EQ(on[0].params, off[0].params) << what;
  }
}

// fp16 with dynamic loss scaling: an Inf injected into one gradient on dp rank 0 at step 3 makes
// every rank of tp 2 × dp 2 skip that step (the decision is agreed over dp and tp), as one rank
// does, and the run stays within the bf16-level tolerance of the single-rank fp16 run.
TEST_F(TensorParallelEquivalence, Fp16OverflowSkipsOnEveryRank) {
  models::TrainOptions o = Options();
  o.precision = "fp16";
  o.inject_overflow_step = 3;
  const RunResult reference = Train(o, nullptr);
  ASSERT_EQ(reference.skipped.size(), 21u);
  EXPECT_TRUE(reference.skipped[2]);
  o.tp = 2;
  o.dp = 2;
  o.zero = 1;
  const std::vector<RunResult> results = TrainOnMesh(o);
  for (size_t r = 0; r < results.size(); ++r) {
    EXPECT_EQ(results[r].skipped, reference.skipped) << "rank " << r;
    EXPECT_EQ(results[r].loss_scales, reference.loss_scales) << "rank " << r;
  }
  ExpectEquivalent(reference, results[3], "tp 2 x dp 2 fp16", testing::kTpBf16Tolerance);
}

TEST_F(TensorParallelEquivalence, Tp2Bf16) {
  models::TrainOptions o = Options();
  o.precision = "bf16";
  const RunResult reference = Train(o, nullptr);
  o.tp = 2;
  Check(o, "tp 2 bf16", testing::kTpBf16Tolerance, &reference);
}

// GPT-2 124M's shapes (vocabulary 50257, split unevenly: 25129 + 25128 rows; 12 heads of 64; MLP
// 3072) at one block and a short sequence, 4 steps, against one rank.
TEST(TensorParallelShapes, Gpt2ShapesAtReducedDepth) {
  runtime::SetNumThreads(1);
  models::TrainOptions o = ReferenceOptions();
  o.preset = "gpt2-124m";
  o.num_layers = 1;
  o.steps = 4;
  o.batch = 2;
  o.seq_len = 16;
  const RunResult reference = Train(o, nullptr);
  o.tp = 2;
  const std::vector<RunResult> results = TrainOnMesh(o);
  ExpectEquivalent(reference, results[0], "gpt2-124m shapes, 1 block, tp 2",
                   testing::kTpF32Tolerance);
  ExpectEquivalent(reference, results[1], "gpt2-124m shapes, 1 block, tp 2 rank 1",
                   testing::kTpF32Tolerance);
}

// A checkpoint holds whole tensors under Hugging Face names whatever the layout. Written at
// tp 2 × dp 2 (ZeRO-3, so ZeRO shards of tp shards are gathered) after 10 of 20 steps: resumed on
// the same layout it continues bitwise as the run that never stopped; resumed at tp 1 and tp 4
// (other reduction orders) it stays within the tp tolerance of the single-rank run.
TEST_F(TensorParallelEquivalence, CheckpointAtTp2Dp2ResumesAtTp1AndTp4) {
  models::TrainOptions o = Options();
  o.tp = 2;
  o.dp = 2;
  o.zero = 3;
  const std::vector<RunResult> straight = TrainOnMesh(o);
  o.save_dir = ::testing::TempDir() + "/tp_ckpt";
  std::filesystem::remove_all(o.save_dir);
  testing::TrainAndSaveOnMesh(o, 10);
  o.resume = true;
  const std::vector<RunResult> resumed = TrainOnMesh(o);
  ASSERT_EQ(resumed[0].losses.size(), 10u);
  EXPECT_EQ(resumed[0].losses,
            std::vector<float>(straight[0].losses.begin() + 10, straight[0].losses.end()));
  EXPECT_EQ(resumed[0].params, straight[0].params);
  for (int tp : {1, 4}) {
    models::TrainOptions other = Options();
    other.tp = tp;
    other.save_dir = o.save_dir;
    other.resume = true;
    RunResult got = TrainOnMesh(other)[0];
    got.losses.insert(got.losses.begin(), reference_->losses.begin(),
                      reference_->losses.begin() + 10);
    got.grad_norms.insert(got.grad_norms.begin(), reference_->grad_norms.begin(),
                          reference_->grad_norms.begin() + 10);
    ExpectEquivalent(*reference_, got, "tp 2 x dp 2 checkpoint resumed at tp " + std::to_string(tp),
                     testing::kTpF32Tolerance);
  }
}

}  // namespace
}  // namespace loom::parallel
