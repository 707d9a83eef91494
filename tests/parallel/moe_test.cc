// The MoE layer: every parameter's and the input's gradient against central finite differences
// (softmax and sigmoid routers, node-limited routing, the auxiliary loss, capacity drops), an
// expert that gets no token still reports a zero gradient, the balancing bias moves against
// the load, and expert parallelism on 2 and 4 thread ranks reproduces the one-rank layer
// (outputs, input gradients, every expert's gradient, and the partial router / shared gradients
// summed over ep).
#include "parallel/layers/moe.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <map>
#include <mutex>
#include <numeric>

#include "absl/strings/str_cat.h"
#include "comm/local/local_backend.h"
#include "models/trainer.h"
#include "runtime/parallel.h"
#include "runtime/rng.h"
#include "tests/parallel/dp_checks.h"
#include "tests/runtime/kernels/test_util.h"

namespace loom::parallel {
namespace {

using runtime::DType;
using runtime::MemoryTag;
using runtime::Tensor;
using runtime::kernels::RouterScore;
using runtime::kernels::testing::Dot;
using runtime::kernels::testing::RandomTensor;

constexpr int64_t kDim = 8;

MoeOptions SmallOptions() {
  return {.num_experts = 8, .top_k = 2, .expert_hidden = 6, .shared_experts = 1};
}

// Fills every parameter of `layer` (whole or its ep shard) from the counter-based RNG, so a
// shard holds the values the one-rank layer has at those positions.
void Fill(MoeLayer& layer) {
  for (Parameter* p : layer.Parameters()) {
    p->SetInitializer([name = p->name()](Tensor& out, int64_t offset) {
      runtime::FillNormal(out, 11, name, offset, 0.0f, 0.5f);
    });
    p->Materialize();
  }
}

// Forward and backward of Σ y·w (+ the auxiliary loss) on `x`; returns that loss and, in
// `experts`, the routing it took.
double RunLayer(MoeLayer& layer, Tensor& x, const Tensor& w, Tensor* dx, int64_t seq_len,
                std::vector<int32_t>* experts = nullptr) {
  Stash stash;
  stash.SetSequenceLength(seq_len);
  const Tensor y = layer.Forward(stash, x);
  const double loss = Dot(y, w) + stash.aux_loss();
  if (experts != nullptr) {
    const Tensor e = stash.Get(&layer, "experts");
    experts->assign(e.data<int32_t>(), e.data<int32_t>() + e.numel());
  }
  if (dx != nullptr) {
    *dx = layer.BackwardInput(stash, w);
    layer.BackwardWeight(stash);
  }
  return loss;
}

// Central differences at up to 24 elements of `input`, skipping an element whose step changes
// some token's choice of experts (the loss jumps there: routing is piecewise constant); at least
// half of them must be checked.
void ExpectLayerGradient(MoeLayer& layer, Tensor& x, const Tensor& w, Tensor& input,
                         const Tensor& analytic, const std::string& what) {
  constexpr double kStep = 1e-3;
  std::vector<int32_t> base, moved;
  RunLayer(layer, x, w, nullptr, 6, &base);
  const std::vector<int64_t> probes = runtime::kernels::testing::ProbeIndices(input.numel());
  int checked = 0;
  for (int64_t i : probes) {
    float& v = input.data<float>()[i];
    const float saved = v;
    v = static_cast<float>(saved + kStep);
    const double up = RunLayer(layer, x, w, nullptr, 6, &moved);
    bool same = moved == base;
    v = static_cast<float>(saved - kStep);
    const double down = RunLayer(layer, x, w, nullptr, 6, &moved);
    same = same && moved == base;
    v = saved;
    if (!same) continue;
    ++checked;
    const double numeric = (up - down) / (2 * kStep);
    EXPECT_NEAR(analytic.data<float>()[i], numeric, 1e-3 + 1e-2 * std::fabs(numeric))
        << what << " at element " << i;
  }
  EXPECT_GE(2 * checked, static_cast<int>(probes.size())) << what << ": routing too unstable";
}

void CheckGradients(MoeOptions o, const std::string& what) {
  MoeLayer layer("h.0.mlp", kDim, o);
  Fill(layer);
  Tensor x = RandomTensor({2, 6, kDim}, 3);
  const Tensor w = RandomTensor({2, 6, kDim}, 4);
  for (Parameter* p : layer.Parameters()) p->ZeroGrad();
  Tensor dx;
  RunLayer(layer, x, w, &dx, 6);
  ExpectLayerGradient(layer, x, w, x, dx, what + " dx");
  for (Parameter* p : layer.Parameters()) {
    ExpectLayerGradient(layer, x, w, p->value(), p->grad(), what + " " + p->name());
  }
}

TEST(MoeLayerTest, SigmoidRouterGradientsMatchFiniteDifferences) {
  CheckGradients(SmallOptions(), "sigmoid");
}

TEST(MoeLayerTest, SoftmaxRouterWithAuxLossAndGroupsMatchesFiniteDifferences) {
  MoeOptions o = SmallOptions();
  o.score = RouterScore::kSoftmax;
  o.normalize_gates = false;
  o.aux_loss_coef = 0.1f;
  o.groups = 4;
  o.top_groups = 2;
  CheckGradients(o, "softmax + aux + groups");
  o.score = RouterScore::kSigmoid;
  o.normalize_gates = true;
  CheckGradients(o, "sigmoid + aux + groups");
}

TEST(MoeLayerTest, CapacityDropsMatchFiniteDifferences) {
  MoeOptions o = SmallOptions();
  o.capacity_factor = 0.5;
  o.shared_experts = 0;
  CheckGradients(o, "capacity 0.5");
}

TEST(MoeLayerTest, AnExpertWithoutTokensGetsAZeroGradientAndItsHook) {
  MoeOptions o = SmallOptions();
  MoeLayer layer("h.0.mlp", kDim, o);
  Fill(layer);
  layer.bias().data<float>()[3] = -100.0f;  // no token picks expert 3
  std::map<std::string, int> fired;
  for (Parameter* p : layer.Parameters()) {
    p->ZeroGrad();
    p->SetGradReadyHook([&](Parameter& q) { ++fired[q.name()]; });
  }
  Tensor x = RandomTensor({12, kDim}, 5);
  Tensor dx;
  RunLayer(layer, x, RandomTensor({12, kDim}, 6), &dx, 12);
  EXPECT_EQ(layer.load()[3], 0);
  for (Parameter* p : layer.Parameters()) EXPECT_EQ(fired[p->name()], 1) << p->name();
  for (const char* name : {"gate_proj", "up_proj", "down_proj"}) {
    Parameter* p = nullptr;
    for (Parameter* q : layer.Parameters()) {
      if (q->name() == std::string("h.0.mlp.experts.") + name + ".weight") p = q;
    }
    ASSERT_NE(p, nullptr);
    const int64_t per = p->grad().numel() / o.num_experts;
    double zero = 0, other = 0;
    for (int64_t i = 0; i < p->grad().numel(); ++i) {
      (i / per == 3 ? zero : other) += std::fabs(p->grad().data<float>()[i]);
    }
    EXPECT_EQ(zero, 0.0) << name;
    EXPECT_GT(other, 0.0) << name;
  }
}

TEST(MoeLayerTest, BiasMovesAgainstTheLoad) {
  MoeLayer layer("h.0.mlp", kDim, SmallOptions());
  layer.UpdateBias({10, 2, 6, 6, 6, 6, 6, 6});  // mean 6
  const float rate = SmallOptions().bias_update_rate;
  EXPECT_EQ(layer.bias().data<float>()[0], -rate);
  EXPECT_EQ(layer.bias().data<float>()[1], rate);
  EXPECT_EQ(layer.bias().data<float>()[2], 0.0f);
}

// Expert parallelism on `ep` thread ranks against the one-rank layer on the same tokens. With
// `hier_groups` > 0: node-limited routing over that many groups (each token's experts in at most
// `top_groups` of them, the same on one rank) and the hierarchical dispatch over them.
void CheckExpertParallel(int ep, int hier_groups = 0, int top_groups = 1) {
  const int64_t tokens_per_rank = 10;
  const int64_t n = tokens_per_rank * ep;
  MoeOptions o = SmallOptions();
  o.aux_loss_coef = 0.05f;
  if (hier_groups > 0) {
    o.groups = hier_groups;
    o.top_groups = top_groups;
  }
  MoeLayer reference("h.0.mlp", kDim, o);
  Fill(reference);
  Tensor x = RandomTensor({n, kDim}, 7);
  const Tensor w = RandomTensor({n, kDim}, 8);
  for (Parameter* p : reference.Parameters()) p->ZeroGrad();
  Stash ref_stash;
  ref_stash.SetSequenceLength(5);
  const Tensor y_ref = reference.Forward(ref_stash, x);
  const Tensor dx_ref = reference.BackwardInput(ref_stash, w);
  reference.BackwardWeight(ref_stash);
  std::map<std::string, std::vector<float>> ref_grads;
  for (Parameter* p : reference.Parameters()) ref_grads[p->name()] = p->grad().ToF32Vector();

  std::map<std::string, std::vector<double>> summed;  // replicated gradients summed over ep
  std::mutex mu;
  testing::OnRanks(ep, [&](int rank, comm::Communicator& group) {
    MoeOptions ro = o;
    ro.ep = &group;
    std::unique_ptr<comm::Communicator> rail, host;
    if (hier_groups > 0) {
      const int per_group = ep / hier_groups;
      rail = *group.Split(rank % per_group, rank);
      host = *group.Split(rank / per_group, rank);
      ro.ep_rail = rail.get();
      ro.ep_host = host.get();
    }
    MoeLayer layer("h.0.mlp", kDim, ro);
    Fill(layer);
    for (Parameter* p : layer.Parameters()) p->ZeroGrad();
    const Tensor xr = x.Slice(rank * tokens_per_rank, (rank + 1) * tokens_per_rank);
    const Tensor wr = w.Slice(rank * tokens_per_rank, (rank + 1) * tokens_per_rank);
    Stash stash;
    stash.SetSequenceLength(5);
    // The auxiliary loss is a mean over sequences: each rank's is 1/ep of the whole batch's.
    stash.SetLossGradScale(1.0f / static_cast<float>(ep));
    const Tensor y = layer.Forward(stash, xr);
    const Tensor dx = layer.BackwardInput(stash, wr);
    layer.BackwardWeight(stash);
    const std::vector<float> yv = y.ToF32Vector(), dxv = dx.ToF32Vector();
    const std::vector<float> y_all = y_ref.ToF32Vector(), dx_all = dx_ref.ToF32Vector();
    for (int64_t i = 0; i < tokens_per_rank * kDim; ++i) {
      EXPECT_NEAR(yv[i], y_all[rank * tokens_per_rank * kDim + i], 1e-5) << "y rank " << rank;
      EXPECT_NEAR(dxv[i], dx_all[rank * tokens_per_rank * kDim + i], 1e-5) << "dx rank " << rank;
    }
    std::lock_guard<std::mutex> lock(mu);
    for (Parameter* p : layer.Parameters()) {
      const std::vector<float> g = p->grad().ToF32Vector();
      if (p->shard_spec().is_split()) {  // this rank's experts: complete gradients
        EXPECT_EQ(p->local_shape()[0], o.num_experts / ep);
        const std::vector<float>& whole = ref_grads[p->name()];
        const size_t offset = rank * g.size();
        for (size_t i = 0; i < g.size(); ++i) {
          EXPECT_NEAR(g[i], whole[offset + i], 1e-5) << p->name() << " rank " << rank;
        }
      } else {
        EXPECT_TRUE(p->shard_spec().grad_partial_over_axis("ep")) << p->name();
        auto& s = summed[p->name()];
        s.resize(g.size(), 0.0);
        for (size_t i = 0; i < g.size(); ++i) s[i] += g[i];
      }
    }
  });
  for (const auto& [name, s] : summed) {
    const std::vector<float>& whole = ref_grads[name];
    for (size_t i = 0; i < s.size(); ++i) EXPECT_NEAR(s[i], whole[i], 1e-5) << name;
  }
}

TEST(MoeLayerTest, ExpertParallelOnTwoRanksEqualsOneRank) { CheckExpertParallel(2); }
TEST(MoeLayerTest, ExpertParallelOnFourRanksEqualsOneRank) { CheckExpertParallel(4); }
// The hierarchical dispatch over 2 groups of 2 ranks (a token crosses once to each group holding
// one of its experts, then is forwarded inside it), with and without the node limit, and over 2
// groups of one rank each (nothing to forward).
TEST(MoeLayerTest, HierarchicalDispatchEqualsOneRank) {
  CheckExpertParallel(4, /*hier_groups=*/2, /*top_groups=*/1);
  CheckExpertParallel(4, /*hier_groups=*/2, /*top_groups=*/2);
  CheckExpertParallel(2, /*hier_groups=*/2, /*top_groups=*/2);
}

// FP8 dispatch over the hierarchical path: the rail rank forwards the rows as they arrived,
// packed, so every expert computes on the values their source quantised once, as under the flat
// FP8 dispatch. Outputs, input gradients and every gradient equal the flat dispatch's within f32
// summation order (FP8 rounding itself is far coarser: rows forwarded with the wrong scales or
// widths, or left packed where they end, would show). 4 ranks in 2 groups, and 2 groups of one
// rank (nothing to forward: the packed rows are widened where they arrived).
void CheckHierarchicalFp8(int ep, int groups) {
  constexpr int64_t kTokensPerRank = 12;
  MoeOptions o = SmallOptions();
  o.dispatch_dtype = DType::kF8E4M3;
  o.groups = groups;
  o.top_groups = groups;
  const Tensor x = RandomTensor({kTokensPerRank * ep, kDim}, 17);
  const Tensor w = RandomTensor({kTokensPerRank * ep, kDim}, 18);
  testing::OnRanks(ep, [&](int rank, comm::Communicator& group) {
    const int per_group = ep / groups;
    std::unique_ptr<comm::Communicator> rail = *group.Split(rank % per_group, rank);
    std::unique_ptr<comm::Communicator> host = *group.Split(rank / per_group, rank);
    const Tensor xr = x.Slice(rank * kTokensPerRank, (rank + 1) * kTokensPerRank);
    const Tensor wr = w.Slice(rank * kTokensPerRank, (rank + 1) * kTokensPerRank);
    std::vector<std::vector<float>> results[2];  // flat, hierarchical: y, dx, each gradient
    for (int hier = 0; hier < 2; ++hier) {
      MoeOptions ro = o;
      ro.ep = &group;
      if (hier == 1) {
        ro.ep_rail = rail.get();
        ro.ep_host = host.get();
      }
      MoeLayer layer("h.0.mlp", kDim, ro);
      Fill(layer);
      for (Parameter* p : layer.Parameters()) p->ZeroGrad();
      Stash stash;
      results[hier].push_back(layer.Forward(stash, xr).ToF32Vector());
      results[hier].push_back(layer.BackwardInput(stash, wr).ToF32Vector());
      layer.BackwardWeight(stash);
      for (Parameter* p : layer.Parameters()) results[hier].push_back(p->grad().ToF32Vector());
    }
    ASSERT_EQ(results[0].size(), results[1].size());
    for (size_t t = 0; t < results[0].size(); ++t) {
      ASSERT_EQ(results[0][t].size(), results[1][t].size()) << "tensor " << t;
      for (size_t i = 0; i < results[0][t].size(); ++i) {
        EXPECT_NEAR(results[1][t][i], results[0][t][i], 1e-5)
            << "rank " << rank << ", tensor " << t << " (y, dx, then the gradients), element " << i;
      }
    }
  });
}

TEST(MoeLayerTest, HierarchicalFp8DispatchEqualsTheFlatOne) {
  CheckHierarchicalFp8(/*ep=*/4, /*groups=*/2);
  CheckHierarchicalFp8(/*ep=*/2, /*groups=*/2);
}

// Tensor parallelism without sequence parallelism: both tp ranks hold all 20 tokens and route
// only their half (each rank's load counts 10 tokens' slots), and the output and input gradient,
// gathered over tp, equal one rank's; every gradient is partial over tp and sums to one rank's
// (with the auxiliary loss, whose statistics cover both halves).
TEST(MoeLayerTest, TensorParallelRanksSplitTheTokens) {
  constexpr int kTp = 2;
  constexpr int64_t kTokens = 20, kSeqLen = 5;
  MoeOptions o = SmallOptions();
  o.aux_loss_coef = 0.05f;
  MoeLayer reference("h.0.mlp", kDim, o);
  Fill(reference);
  const Tensor x = RandomTensor({kTokens, kDim}, 7), w = RandomTensor({kTokens, kDim}, 8);
  for (Parameter* p : reference.Parameters()) p->ZeroGrad();
  Stash ref_stash;
  ref_stash.SetSequenceLength(kSeqLen);
  const std::vector<float> y_ref = reference.Forward(ref_stash, x).ToF32Vector();
  const std::vector<float> dx_ref = reference.BackwardInput(ref_stash, w).ToF32Vector();
  reference.BackwardWeight(ref_stash);
  std::map<std::string, std::vector<double>> summed;
  std::mutex mu;
  testing::OnRanks(kTp, [&](int rank, comm::Communicator& group) {
    MoeOptions ro = o;
    ro.tp = {.group = &group};
    MoeLayer layer("h.0.mlp", kDim, ro);
    ASSERT_TRUE(layer.splits_tokens());
    Fill(layer);
    for (Parameter* p : layer.Parameters()) p->ZeroGrad();
    Stash stash;
    stash.SetSequenceLength(kSeqLen);
    const std::vector<float> y = layer.Forward(stash, x).ToF32Vector();
    EXPECT_NEAR(stash.aux_loss(), ref_stash.aux_loss(), 1e-6) << "rank " << rank;
    const std::vector<float> dx = layer.BackwardInput(stash, w).ToF32Vector();
    layer.BackwardWeight(stash);
    ASSERT_EQ(y.size(), y_ref.size());
    ASSERT_EQ(dx.size(), dx_ref.size());
    for (size_t i = 0; i < y.size(); ++i) {
      EXPECT_NEAR(y[i], y_ref[i], 1e-5) << "y rank " << rank;
      EXPECT_NEAR(dx[i], dx_ref[i], 1e-5) << "dx rank " << rank;
    }
    const std::vector<int64_t>& load = layer.load();
    EXPECT_EQ(std::accumulate(load.begin(), load.end(), int64_t{0}), kTokens / kTp * o.top_k)
        << "rank " << rank;
    std::lock_guard<std::mutex> lock(mu);
    for (Parameter* p : layer.Parameters()) {
      EXPECT_TRUE(p->shard_spec().grad_partial_over_axis("tp")) << p->name();
      const std::vector<float> g = p->grad().ToF32Vector();
      std::vector<double>& s = summed[p->name()];
      s.resize(g.size(), 0.0);
      for (size_t i = 0; i < g.size(); ++i) s[i] += g[i];
    }
  });
  for (Parameter* p : reference.Parameters()) {
    const std::vector<float> whole = p->grad().ToF32Vector();
    const std::vector<double>& s = summed[p->name()];
    ASSERT_EQ(s.size(), whole.size()) << p->name();
    for (size_t i = 0; i < s.size(); ++i) EXPECT_NEAR(s[i], whole[i], 1e-5) << p->name();
  }
}

// Training the tiny MoE GPT (layer 1 a MoE of 8 experts top-2 + 1 shared) under expert
// parallelism, alone and with data, tensor and pipeline parallelism, against one rank with the
// same global batch: ep splits the expert GEMMs' row sums by source rank and sums the replicated
// gradients over ep, so results agree within the tensor-parallel f32 tolerance (routing stayed
// the same: a flipped choice would show as a loss jump).
constexpr testing::Tolerance kFp8DispatchTolerance = testing::kMoeFp8Tolerance;

class MoeEquivalence : public ::testing::Test {
 protected:
  static models::TrainOptions Options() {
    models::TrainOptions o = testing::ReferenceOptions();
    o.preset = "tiny-moe";
    return o;
  }
  static void SetUpTestSuite() {
    runtime::SetNumThreads(1);
    reference_ = new testing::RunResult(testing::Train(Options(), nullptr));
  }
  static void TearDownTestSuite() { delete reference_; }
  static void Check(const models::TrainOptions& o, const std::string& what,
                    const testing::RunResult* reference = nullptr) {
    testing::ExpectEquivalentOnRanks(reference != nullptr ? *reference : *reference_,
                                     testing::TrainOnMesh(o), what, testing::kTpF32Tolerance);
  }
  // Trains `o` with overlap and without (o.moe_overlap false), expects bitwise equal losses and
  // parameters on every rank, and returns the run with overlap.
  static std::vector<testing::RunResult> OverlapOnAndOffBitwise(models::TrainOptions o,
                                                                const std::string& what) {
    o.moe_overlap = true;
    std::vector<testing::RunResult> on = testing::TrainOnMesh(o);
    o.moe_overlap = false;
    const std::vector<testing::RunResult> off = testing::TrainOnMesh(o);
    for (size_t r = 0; r < on.size(); ++r) {
      EXPECT_EQ(on[r].losses, off[r].losses) << what << ", rank " << r;
      EXPECT_EQ(on[r].params, off[r].params) << what << ", rank " << r;
    }
    return on;
  }
  static testing::RunResult* reference_;
};
testing::RunResult* MoeEquivalence::reference_ = nullptr;

TEST_F(MoeEquivalence, Ep2AndEp4) {
  for (int ep : {2, 4}) {
    models::TrainOptions o = Options();
    o.ep = ep;
    Check(o, "ep " + std::to_string(ep));
  }
}

TEST_F(MoeEquivalence, Ep2Dp2EveryZeroStage) {
  for (int zero : {0, 1, 2, 3}) {
    models::TrainOptions o = Options();
    o.ep = 2;
    o.dp = 2;
    o.zero = zero;
    Check(o, "ep 2 x dp 2 zero " + std::to_string(zero));
  }
}

// Without sequence parallelism the tp ranks split each MoE layer's tokens (MoeOptions::tp): the
// MoE parameters' gradients are summed over tp and the loads too.
TEST_F(MoeEquivalence, Tp2AndEp2Tp2) {
  models::TrainOptions o = Options();
  o.tp = 2;
  Check(o, "tp 2");
  o.ep = 2;
  Check(o, "ep 2 x tp 2");
}

// Expert parallelism folded over tensor parallelism (--moe_fold_tp): the ep x tp ranks split the
// experts and each routes its share of the tokens, with and without sequence parallelism, alone
// and with ep 2; against one rank. Each rank holds E / (ep x tp) experts (tp 2: 4 of the 8; ep 2
// x tp 2: 2), so a gradient or load summed over the wrong group, or an expert counted twice in
// the norm, shows.
TEST_F(MoeEquivalence, FoldedOverTensorParallelism) {
  models::TrainOptions o = Options();
  o.moe_fold_tp = true;
  o.tp = 2;
  for (int ep : {1, 2}) {
    o.ep = ep;
    for (bool sp : {false, true}) {
      o.sequence_parallel = sp;
      Check(o, absl::StrCat("ep ", ep, " x tp 2 folded", sp ? ", sequence parallel" : ""));
    }
  }
  o.sequence_parallel = false;
  testing::OnMesh(o, [&](int rank, const ParallelContext& context) {
    absl::StatusOr<std::unique_ptr<models::Trainer>> t = models::Trainer::Create(o, context);
    ASSERT_TRUE(t.ok()) << t.status();
    for (Parameter* p : (*t)->model().Parameters()) {
      if (p->name().find(".experts.") == std::string::npos) continue;
      EXPECT_EQ(p->local_shape()[0], 8 / 4) << p->name() << ", rank " << rank;
      EXPECT_EQ(p->shard_spec().axis, kEpTpAxis) << p->name();
    }
  });
}

// Folded inside pipeline stages (tp 2 x pp 2: each stage's two tp ranks split its MoE layers'
// experts), against one rank accumulating the pipeline's two micro-batches.
TEST_F(MoeEquivalence, FoldedInsidePipelineStages) {
  models::TrainOptions o = Options();
  o.grad_accum = 2;
  const testing::RunResult reference = testing::Train(o, nullptr);
  o.grad_accum = 1;
  o.moe_fold_tp = true;
  o.tp = 2;
  o.pp = 2;
  o.micro_batches = 2;
  Check(o, "tp 2 x pp 2 folded", &reference);
}

// Folded with the hierarchical dispatch (ep 2 x tp 2 = 4 folded ranks in 2 node-limited groups)
// and with the dual micro-batch overlap (overlap on and off bitwise), against one rank.
TEST_F(MoeEquivalence, FoldedWithHierarchicalDispatchAndDualBatch) {
  models::TrainOptions o = Options();
  o.moe_groups = 2;
  o.moe_top_groups = 2;
  const testing::RunResult reference = testing::Train(o, nullptr);
  o.moe_fold_tp = true;
  o.tp = 2;
  o.ep = 2;
  o.moe_hier_dispatch = true;
  Check(o, "ep 2 x tp 2 folded, hierarchical", &reference);
  o.moe_hier_dispatch = false;
  o.moe_dual_batch = true;
  testing::ExpectEquivalentOnRanks(
      reference, OverlapOnAndOffBitwise(o, "ep 2 x tp 2 folded, dual micro-batch"),
      "ep 2 x tp 2 folded, dual micro-batch", testing::kTpF32Tolerance);
}

// A checkpoint written folded (ep 2 x tp 2) holds whole expert tensors: one rank resumes it
// within the tensor-parallel tolerance of the uninterrupted folded run.
TEST_F(MoeEquivalence, FoldedCheckpointResumesOnOneRank) {
  models::TrainOptions o = Options();
  o.moe_fold_tp = true;
  o.tp = 2;
  o.ep = 2;
  const std::vector<testing::RunResult> straight = testing::TrainOnMesh(o);
  o.save_dir = ::testing::TempDir() + "/moe_folded_ckpt";
  std::filesystem::remove_all(o.save_dir);
  testing::TrainAndSaveOnMesh(o, 10);
  o.resume = true;
  o.moe_fold_tp = false;
  o.tp = 1;
  o.ep = 1;
  const testing::RunResult one = testing::Train(o, nullptr);
  const std::vector<float> tail(straight[0].losses.begin() + 10, straight[0].losses.end());
  ASSERT_EQ(one.losses.size(), tail.size());
  for (size_t s = 0; s < tail.size(); ++s) EXPECT_NEAR(one.losses[s], tail[s], 5e-5) << s;
  for (const auto& [name, values] : straight[0].params) {
    const std::vector<float>& got = one.params.at(name);
    ASSERT_EQ(got.size(), values.size()) << name;
    for (size_t i = 0; i < got.size(); ++i) EXPECT_NEAR(got[i], values[i], 1e-4) << name;
  }
}

// Sequence parallelism: each tp rank routes only its share of every sequence through the experts,
// so the router's and the experts' gradients are partial over tp (over tp and ep for the router
// and the shared experts under ep), and the balancing bias's loads are summed over tp too. A load
// not summed over tp moves the biases apart from the reference's; a gradient not summed over tp
// is half the reference's.
TEST_F(MoeEquivalence, SequenceParallelTp2AndEp2Tp2) {
  models::TrainOptions o = Options();
  o.tp = 2;
  o.sequence_parallel = true;
  Check(o, "tp 2 sequence parallel");
  o.ep = 2;
  Check(o, "ep 2 x tp 2 sequence parallel");
}

// The sequence-level auxiliary loss under tensor parallelism (the tp ranks split the tokens) and
// sequence parallelism: with micro-batches of one sequence, every sequence is split between the 2
// tp ranks, whose routing counts (and, for the reported loss, probabilities) are summed over tp.
// Counted on one rank's half only, the loss's gradient would differ from the reference's.
TEST_F(MoeEquivalence, AuxLossWithTensorAndSequenceParallelism) {
  models::TrainOptions o = Options();
  o.moe_aux_loss_coef = 0.05f;
  o.grad_accum = 8;
  const testing::RunResult reference = testing::Train(o, nullptr);
  o.tp = 2;
  Check(o, "aux loss, tp 2, sequences split", &reference);
  o.sequence_parallel = true;
  Check(o, "aux loss, tp 2 sequence parallel, sequences split", &reference);
  o.ep = 2;
  o.grad_accum = 4;
  Check(o, "aux loss, ep 2 x tp 2 sequence parallel, sequences split", &reference);
}

TEST_F(MoeEquivalence, Ep2InsidePipelineStages) {
  models::TrainOptions o = Options();
  o.grad_accum = 2;  // the reference: the pipeline's two micro-batches, accumulated
  const testing::RunResult reference = testing::Train(o, nullptr);
  o.grad_accum = 1;
  o.ep = 2;
  o.pp = 2;
  o.micro_batches = 2;
  for (const char* schedule : {"1f1b", "zb-h1"}) {
    o.schedule = schedule;
    Check(o, std::string("ep 2 x pp 2 ") + schedule, &reference);
  }
}

// DualPipe-V's paired forward and backward of two micro-batches take turns at the MoE exchanges
// (--moe_dual_batch with --pp): the same arithmetic as running each pair one after the other
// (bitwise), with the chunk overlap on and off (bitwise), and against one rank.
TEST_F(MoeEquivalence, DualPipeVPairsTakeTurns) {
  models::TrainOptions o = Options();
  o.num_layers = 4;  // dualpipe-v cuts the model into 2 x pp stages
  o.grad_accum = 4;  // the reference: the pipeline's four micro-batches, accumulated
  const testing::RunResult reference = testing::Train(o, nullptr);
  o.grad_accum = 1;
  o.ep = 2;
  o.pp = 2;
  o.micro_batches = 4;
  o.schedule = "dualpipe-v";
  const std::vector<testing::RunResult> in_turn = testing::TrainOnMesh(o);
  o.moe_dual_batch = true;
  const std::vector<testing::RunResult> paired =
      OverlapOnAndOffBitwise(o, "ep 2 x pp 2 dualpipe-v, paired F and B");
  for (size_t r = 0; r < paired.size(); ++r) {
    EXPECT_EQ(paired[r].losses, in_turn[r].losses) << "rank " << r;
    EXPECT_EQ(paired[r].params, in_turn[r].params) << "rank " << r;
  }
  testing::ExpectEquivalentOnRanks(reference, paired, "ep 2 x pp 2 dualpipe-v, paired",
                                   testing::kTpF32Tolerance);
}

// A checkpoint carries the balancing biases: 10 steps + save + resume + 10 steps at ep 2 is bitwise
// the uninterrupted run (losses, weights and biases, which have moved), and one rank resumes it
// too (within the ep tolerance).
TEST_F(MoeEquivalence, CheckpointCarriesTheBiasBitwise) {
  models::TrainOptions o = Options();
  o.ep = 2;
  const std::vector<testing::RunResult> straight = testing::TrainOnMesh(o);
  const std::vector<float>& bias = straight[0].params.at("h.1.mlp.gate.e_score_correction_bias");
  EXPECT_TRUE(std::any_of(bias.begin(), bias.end(), [](float b) { return b != 0.0f; }));
  o.save_dir = ::testing::TempDir() + "/moe_ckpt";
  std::filesystem::remove_all(o.save_dir);
  testing::TrainAndSaveOnMesh(o, 10);
  o.resume = true;
  const std::vector<testing::RunResult> resumed = testing::TrainOnMesh(o);
  const std::vector<float> tail(straight[0].losses.begin() + 10, straight[0].losses.end());
  for (int r = 0; r < 2; ++r) {
    EXPECT_EQ(resumed[r].losses, tail) << "rank " << r;
    EXPECT_EQ(resumed[r].params, straight[r].params) << "rank " << r;
  }
  o.ep = 1;
  const testing::RunResult one = testing::Train(o, nullptr);
  ASSERT_EQ(one.losses.size(), tail.size());
  for (size_t s = 0; s < tail.size(); ++s) EXPECT_NEAR(one.losses[s], tail[s], 5e-5);
}

// The auxiliary-loss-free bias alone balances a router that starts skewed: every step's 256
// fresh tokens share a mean direction that two experts' router rows point along, so those two
// take most slots (max/mean load 3.4 at first); with rate 0.01 the bias brings max/mean below
// 1.8 averaged over the last 10 of 150 updates (measured 1.57; sampling noise alone keeps it
// near 1.3 for a mean load of 64 slots), and the two favoured experts end with the lowest biases
// (no weight changes; deterministic values).
TEST(MoeBalancing, BiasBalancesASkewedRouter) {
  MoeOptions o = SmallOptions();
  o.bias_update_rate = 0.01f;
  MoeLayer layer("h.0.mlp", kDim, o);
  Fill(layer);
  float* router = layer.Parameters()[0]->value().data<float>();  // [E, C]
  for (int64_t c = 0; c < kDim; ++c) router[0 * kDim + c] = router[1 * kDim + c] = 1.0f;
  auto imbalance = [](const std::vector<int64_t>& load) {
    const double mean = std::accumulate(load.begin(), load.end(), 0.0) / load.size();
    return *std::max_element(load.begin(), load.end()) / mean;
  };
  double first = 0.0, tail = 0.0;
  const int steps = 150;
  for (int step = 0; step < steps; ++step) {
    Tensor x = RandomTensor({256, kDim}, 100 + step);
    for (int64_t i = 0; i < x.numel(); ++i) x.data<float>()[i] += 0.5f;  // the shared direction
    Tensor dx;
    RunLayer(layer, x, RandomTensor({256, kDim}, 1000 + step), &dx, 256);
    auto load = layer.TakeLoad({});
    ASSERT_TRUE(load.ok());
    load->pop_back();  // the dropped slots (none: dropless)
    if (step == 0) first = imbalance(*load);
    if (step >= steps - 10) tail += imbalance(*load) / 10;
    layer.UpdateBias(*load);
  }
  EXPECT_GT(first, 3.0);
  EXPECT_LT(tail, 1.8);
  const float* bias = layer.bias().data<float>();
  for (int j = 2; j < o.num_experts; ++j) EXPECT_LT(std::max(bias[0], bias[1]), bias[j]) << j;
}

// The chunked exchange with overlap and without is the same arithmetic: bitwise equal runs; and
// 1 or 3 chunks agree within the ep tolerance.
TEST_F(MoeEquivalence, OverlapOnAndOffGiveTheSameBits) {
  models::TrainOptions o = Options();
  o.ep = 2;
  OverlapOnAndOffBitwise(o, "ep 2");
  for (int chunks : {1, 3}) {
    o.moe_chunks = chunks;
    Check(o, "ep 2, " + std::to_string(chunks) + " chunks");
  }
}

// DeepSeek's dual micro-batch overlap runs each micro-batch as two halves that take turns at the
// MoE exchanges. With overlap and without (each exchange waited for before the turn passes) it
// is the same arithmetic: bitwise equal runs; against one rank without halves within the ep
// tolerance, also under ep 2 x dp 2 (ZeRO-2) and ep 2 x tp 2.
TEST_F(MoeEquivalence, DualMicroBatchOverlapOnAndOffGiveTheSameBits) {
  models::TrainOptions o = Options();
  o.ep = 2;
  o.moe_dual_batch = true;
  const std::vector<testing::RunResult> on = OverlapOnAndOffBitwise(o, "ep 2 dual micro-batch");
  testing::ExpectEquivalentOnRanks(*reference_, on, "ep 2 dual micro-batch",
                                   testing::kTpF32Tolerance);
  o = Options();
  o.moe_dual_batch = true;
  o.ep = 2;
  o.dp = 2;
  o.zero = 2;
  Check(o, "ep 2 x dp 2 zero 2, dual micro-batch");
  o.dp = 1;
  o.zero = 0;
  o.tp = 2;
  Check(o, "ep 2 x tp 2, dual micro-batch");
}

// Node-limited routing to one group of 2 at ep 4 moves one element of an expert whose gradient
// there is nearly 0 by 1.73e-4 against one rank, over the flat and the hierarchical dispatch
// alike (measured; AdamW turns the rounding of a near-zero gradient into an update-sized
// difference); losses and gradient norms stay within the tensor-parallel f32 tolerance.
constexpr testing::Tolerance kNodeLimitedTolerance = {
    .loss = 5e-5, .grad_norm = 1e-3, .param = 3e-4};

// Training at ep 4 with the hierarchical dispatch over 2 groups of 2 ranks (node-limited to one
// group per token, and unlimited) against one rank with the same routing; also with the dual
// micro-batch overlap on and off (bitwise equal) and under ep 2 x dp 2.
TEST_F(MoeEquivalence, HierarchicalDispatch) {
  for (int top_groups : {1, 2}) {
    models::TrainOptions o = Options();
    o.moe_groups = 2;
    o.moe_top_groups = top_groups;
    const testing::RunResult reference = testing::Train(o, nullptr);
    o.ep = 4;
    o.moe_hier_dispatch = true;
    const std::string what = "ep 4 hierarchical, top groups " + std::to_string(top_groups);
    const testing::Tolerance tolerance =
        top_groups == 1 ? kNodeLimitedTolerance : testing::kTpF32Tolerance;
    testing::ExpectEquivalentOnRanks(reference, testing::TrainOnMesh(o), what, tolerance);
    if (top_groups == 2) continue;
    o.moe_dual_batch = true;
    testing::ExpectEquivalentOnRanks(reference,
                                     OverlapOnAndOffBitwise(o, what + ", dual micro-batch"),
                                     what + ", dual micro-batch", tolerance);
    o = Options();
    o.moe_groups = 2;
    o.moe_top_groups = top_groups;
    o.moe_hier_dispatch = true;
    o.ep = 2;
    o.dp = 2;
    o.zero = 1;
    testing::ExpectEquivalentOnRanks(reference, testing::TrainOnMesh(o),
                                     "ep 2 x dp 2 hierarchical (one rank per group)", tolerance);
  }
}

// FP8 dispatch and bf16 combine over the hierarchical dispatch (the rail ranks forward the FP8
// rows packed): overlap on and off bitwise, and within the FP8 tolerance of one f32 rank.
TEST_F(MoeEquivalence, HierarchicalFp8Dispatch) {
  models::TrainOptions o = Options();
  o.moe_groups = 2;
  o.moe_top_groups = 2;
  const testing::RunResult reference = testing::Train(o, nullptr);
  o.ep = 4;
  o.moe_hier_dispatch = true;
  o.moe_dispatch = "fp8";
  o.moe_combine = "bf16";
  testing::ExpectEquivalentOnRanks(reference, OverlapOnAndOffBitwise(o, "ep 4 hierarchical fp8"),
                                   "ep 4 hierarchical fp8 / bf16", kFp8DispatchTolerance);
}

TEST(MoeOptions, HierarchicalDispatchNeedsGroups) {
  models::TrainOptions o = testing::ReferenceOptions();
  o.preset = "tiny-moe";
  o.moe_hier_dispatch = true;
  o.ep = 2;
  EXPECT_THAT(std::string(models::ValidateTrainOptions(o).message()),
              ::testing::HasSubstr("--moe_hier_dispatch sends a token once to each expert group"));
  o.moe_groups = 2;
  EXPECT_TRUE(models::ValidateTrainOptions(o).ok());
}

TEST(MoeOptions, DualMicroBatchRefusesWhatItCannotRun) {
  models::TrainOptions o = testing::ReferenceOptions();
  o.preset = "tiny-moe";
  o.moe_dual_batch = true;
  o.ep = 2;
  o.zero = 3;
  EXPECT_THAT(std::string(models::ValidateTrainOptions(o).message()),
              ::testing::HasSubstr("--moe_dual_batch needs --zero 0, 1 or 2"));
  o.zero = 0;
  o.batch = 6;
  EXPECT_THAT(std::string(models::ValidateTrainOptions(o).message()),
              ::testing::HasSubstr("--batch 6 must be a multiple of 2 x --dp 1 x --ep 2 x "
                                   "--grad_accum 1 = 4"));
  o.batch = 8;
  o.pp = 2;
  EXPECT_THAT(std::string(models::ValidateTrainOptions(o).message()),
              ::testing::HasSubstr("which only --schedule dualpipe-v has; got --schedule 1f1b"));
  o = testing::ReferenceOptions();
  o.moe_dual_batch = true;  // the dense tiny preset
  EXPECT_THAT(std::string(models::ValidateTrainOptions(o).message()),
              ::testing::HasSubstr("need a mixture-of-experts model"));
}

// --moe_fold_tp: tp > 1, and the ep x tp ranks must divide the experts (and hold the groups).
TEST(MoeOptions, FoldingNeedsTensorParallelismThatSplitsTheExperts) {
  models::TrainOptions o = testing::ReferenceOptions();
  o.preset = "tiny-moe";
  o.moe_fold_tp = true;
  EXPECT_THAT(std::string(models::ValidateTrainOptions(o).message()),
              ::testing::HasSubstr("it needs --tp > 1, got --tp 1"));
  o.tp = 2;
  o.ep = 8;
  o.batch = 16;
  EXPECT_THAT(
      std::string(models::ValidateTrainOptions(o).message()),
      ::testing::HasSubstr("--ep 8 x --tp 2 (--moe_fold_tp) = 16 must divide the 8 experts"));
  o.ep = 2;
  o.batch = 8;
  o.moe_groups = 8;
  o.moe_top_groups = 2;
  EXPECT_THAT(
      std::string(models::ValidateTrainOptions(o).message()),
      ::testing::HasSubstr("--moe_groups 8 must divide --ep 2 x --tp 2 (--moe_fold_tp) = 4"));
  o.moe_groups = 2;
  EXPECT_TRUE(models::ValidateTrainOptions(o).ok()) << models::ValidateTrainOptions(o);
  o = testing::ReferenceOptions();
  o.tp = 2;
  o.moe_fold_tp = true;  // the dense tiny preset
  EXPECT_THAT(std::string(models::ValidateTrainOptions(o).message()),
              ::testing::HasSubstr("need a mixture-of-experts model"));
}

// The tp ranks split each MoE layer's tokens, so a sequence must split over them.
TEST(MoeOptions, TensorParallelismNeedsSequencesThatSplit) {
  models::TrainOptions o = testing::ReferenceOptions();
  o.preset = "tiny-moe";
  o.tp = 2;
  o.seq_len = 15;
  EXPECT_THAT(std::string(models::ValidateTrainOptions(o).message()),
              ::testing::HasSubstr("split each sequence's 15 tokens over --tp 2; choose a "
                                   "--seq_len that divides by 2"));
  o.seq_len = 16;
  EXPECT_TRUE(models::ValidateTrainOptions(o).ok()) << models::ValidateTrainOptions(o);
}

// FP8 dispatch (e4m3, per-128 scales) and bf16 combine round what travels, so the run drifts from
// the f32 one by more than rounding order; the stated tolerance (measured over 20 steps of the
// tiny MoE at ep 2, see docs/expert_parallel.md) bounds it.
TEST_F(MoeEquivalence, Fp8DispatchAndBf16CombineWithinTheirTolerance) {
  models::TrainOptions o = Options();
  o.ep = 2;
  o.moe_dispatch = "fp8";
  o.moe_combine = "bf16";
  testing::ExpectEquivalentOnRanks(*reference_, testing::TrainOnMesh(o), "ep 2 fp8 / bf16",
                                   kFp8DispatchTolerance);
  o.moe_dispatch = "bf16";
  testing::ExpectEquivalentOnRanks(*reference_, testing::TrainOnMesh(o), "ep 2 bf16 / bf16",
                                   kFp8DispatchTolerance);
}

}  // namespace
}  // namespace loom::parallel
