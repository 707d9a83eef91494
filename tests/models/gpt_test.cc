// GPT model: every parameter's gradient against central finite differences of the mean loss (for
// the GPT-2 variant and the RMSNorm + SwiGLU variant), full recompute equal bit for bit to the
// stashing run, each parameter's grad-ready hook firing exactly once per backward (the tied
// embedding only after both uses), layout-independent initialisation, and the flash form of
// attention (finite differences, and against the probabilities form).
#include "models/gpt.h"

#include <gtest/gtest.h>

#include <cmath>
#include <map>

#include "runtime/rng.h"
#include "tests/runtime/kernels/test_util.h"

namespace loom::models {
namespace {

using parallel::Parameter;
using parallel::Stash;
using runtime::DType;
using runtime::MemoryTag;
using runtime::Tensor;
using runtime::kernels::testing::ExpectGradientMatches;
using runtime::kernels::testing::RandomIds;

GptConfig SmallConfig(GptConfig::Mlp mlp, GptConfig::Norm norm) {
  GptConfig c;
  c.name = "test";
  c.vocab_size = 11;
  c.context_length = 8;
  c.num_layers = 2;
  c.num_heads = 2;
  c.dim = 8;
  c.mlp = mlp;
  c.norm = norm;
  c.init_std = 0.3f;  // larger than GPT-2's 0.02 so every path carries visible gradient
  return c;
}

void CheckAllGradients(const GptConfig& config) {
  GptModel model(config);
  model.Initialize(7);
  const Tensor inputs = RandomIds({2, 7}, 11, 1);
  const Tensor targets = RandomIds({2, 7}, 11, 2);
  Stash stash;
  model.ZeroGrad();
  model.ForwardLoss(stash, inputs, targets);
  model.Backward(stash, 1.0f);
  auto loss = [&] {
    Stash s;
    return static_cast<double>(model.ForwardLoss(s, inputs, targets));
  };
  for (Parameter* p : model.Parameters()) {
    ExpectGradientMatches(loss, p->value(), p->grad(), p->name(),
                          {.step = 2e-3, .atol = 2e-4, .rtol = 1e-2});
  }
}

TEST(GptTest, Gpt2GradientsMatchFiniteDifferences) {
  CheckAllGradients(SmallConfig(GptConfig::Mlp::kGelu, GptConfig::Norm::kLayerNorm));
}

TEST(GptTest, RmsNormSwiGluGradientsMatchFiniteDifferences) {
  CheckAllGradients(SmallConfig(GptConfig::Mlp::kSwiGlu, GptConfig::Norm::kRMSNorm));
}

TEST(GptTest, FlashAttentionGradientsMatchFiniteDifferences) {
  GptConfig config = SmallConfig(GptConfig::Mlp::kGelu, GptConfig::Norm::kLayerNorm);
  config.flash_attention = true;
  CheckAllGradients(config);
}

// The flash form computes the same model as the probabilities form (within f32 rounding: its
// backward recomputes the probabilities from the log-sum-exp) and stashes far less at T = 64.
TEST(GptTest, FlashAttentionMatchesTheProbsFormAndStashesLess) {
  GptConfig config = SmallConfig(GptConfig::Mlp::kGelu, GptConfig::Norm::kLayerNorm);
  config.context_length = 64;
  std::map<std::string, std::vector<float>> grads[2];
  float losses[2];
  int64_t stash_bytes[2];
  for (int flash = 0; flash < 2; ++flash) {
    config.flash_attention = flash == 1;
    GptModel model(config);
    model.Initialize(5);
    Stash stash;
    losses[flash] = model.ForwardLoss(stash, RandomIds({2, 64}, 11, 6), RandomIds({2, 64}, 11, 7));
    stash_bytes[flash] = stash.bytes();
    model.Backward(stash, 1.0f);
    for (Parameter* p : model.Parameters()) grads[flash][p->name()] = p->grad().ToF32Vector();
  }
  EXPECT_NEAR(losses[1], losses[0], 1e-6 * std::fabs(losses[0]));
  for (const auto& [name, want] : grads[0]) {
    const std::vector<float>& got = grads[1][name];
    ASSERT_EQ(got.size(), want.size()) << name;
    for (size_t i = 0; i < want.size(); ++i) {
      ASSERT_NEAR(got[i], want[i], 1e-6 + 1e-4 * std::fabs(want[i])) << name << "[" << i << "]";
    }
  }
  // The probabilities of both layers (2 x 2 x 64 x 64 floats each) give way to the log-sum-exp
  // (2 x 2 x 64) and a stash entry for the heads' output (the output projection's input).
  const int64_t probs_bytes = 2 * 2 * 2 * 64 * 64 * 4;
  EXPECT_LT(stash_bytes[1], stash_bytes[0] - 3 * probs_bytes / 4);
}

TEST(GptTest, RecomputeIsBitwiseEqual) {
  const GptConfig config = SmallConfig(GptConfig::Mlp::kGelu, GptConfig::Norm::kLayerNorm);
  std::map<std::string, std::vector<float>> grads[2];
  float losses[2];
  int64_t stash_bytes[2];
  for (int recompute = 0; recompute < 2; ++recompute) {
    GptModel model(config);
    model.Initialize(3);
    model.SetRecompute(recompute == 1);
    Stash stash;
    losses[recompute] =
        model.ForwardLoss(stash, RandomIds({2, 8}, 11, 4), RandomIds({2, 8}, 11, 5));
    stash_bytes[recompute] = stash.bytes();
    model.Backward(stash, 1.0f);
    for (Parameter* p : model.Parameters()) grads[recompute][p->name()] = p->grad().ToF32Vector();
  }
  EXPECT_EQ(losses[0], losses[1]);
  EXPECT_EQ(grads[0], grads[1]);
  EXPECT_LT(stash_bytes[1], stash_bytes[0] / 2) << "recompute should stash far less";
}

TEST(GptTest, GradReadyHookFiresOncePerParameterAfterAllUses) {
  GptModel model(SmallConfig(GptConfig::Mlp::kGelu, GptConfig::Norm::kLayerNorm));
  model.Initialize(1);
  std::vector<std::string> order;
  for (Parameter* p : model.Parameters()) {
    p->SetGradReadyHook([&order](Parameter& q) { order.push_back(q.name()); });
  }
  for (int step = 0; step < 2; ++step) {
    order.clear();
    Stash stash;
    model.ForwardLoss(stash, RandomIds({1, 5}, 11, 6), RandomIds({1, 5}, 11, 7));
    model.Backward(stash, 1.0f);
    EXPECT_EQ(order.size(), model.Parameters().size());
    std::map<std::string, int> count;
    for (const std::string& n : order) ++count[n];
    for (const auto& [name, c] : count) EXPECT_EQ(c, 1) << name;
    // The tied embedding is used by the LM head (first in backward) and the embedding (last).
    EXPECT_EQ(order.back(), "wte.weight");
    EXPECT_EQ(order.front(), "ln_f.weight");
  }
}

// Element i of a weight is N(0, std) drawn from element i of the counter-based stream (seed, its
// name): Box-Muller on the first two Philox words (runtime/rng.h; Philox itself is checked
// against Random123's known answers in rng_test), computed here in double. std is init_std, and
// init_std / sqrt(2 · layers) for the residual projections (GPT-2's rule).
TEST(GptTest, InitializationIsTheCounterBasedStream) {
  const GptConfig config = SmallConfig(GptConfig::Mlp::kGelu, GptConfig::Norm::kLayerNorm);
  GptModel a(config);
  a.Initialize(42);
  auto expected = [](const std::string& name, uint64_t i, double std) {
    const runtime::PhiloxCounter r = runtime::RandomBits(42, runtime::Fnv1a64(name), i);
    const double u1 = 1.0 - static_cast<double>(r[0] >> 8) / 16777216.0;
    const double u2 = static_cast<double>(r[1] >> 8) / 16777216.0;
    return std * std::sqrt(-2.0 * std::log(u1)) * std::cos(2.0 * M_PI * u2);
  };
  const double residual = 0.3 / std::sqrt(2.0 * config.num_layers);
  for (const auto& [name, std] : {std::pair<std::string, double>{"h.1.mlp.c_fc.weight", 0.3},
                                  {"h.0.attn.c_attn.weight", 0.3},
                                  {"h.1.mlp.c_proj.weight", residual},
                                  {"h.0.attn.c_proj.weight", residual},
                                  {"wte.weight", 0.3}}) {
    const Parameter* w = a.FindParameter(name);
    ASSERT_NE(w, nullptr) << name;
    const std::vector<float> values = w->value().ToF32Vector();
    for (size_t i = 0; i < values.size(); ++i) {
      ASSERT_NEAR(values[i], expected(name, i, std), 1e-5) << name << "[" << i << "]";
    }
  }
  EXPECT_EQ(a.FindParameter("h.0.ln_1.weight")->value().ToF32Vector(), std::vector<float>(8, 1.0f));
  EXPECT_EQ(a.FindParameter("h.0.attn.c_attn.bias")->value().ToF32Vector(),
            std::vector<float>(24, 0.0f));
  EXPECT_EQ(a.FindParameter("h.0.attn.c_attn.weight")->global_shape(), (runtime::Shape{8, 24}));
}

TEST(GptTest, PresetsAndValidation) {
  for (const std::string& name : GptConfig::PresetNames()) {
    absl::StatusOr<GptConfig> c = GptConfig::Preset(name);
    ASSERT_TRUE(c.ok()) << name;
    EXPECT_TRUE(c->Validate().ok()) << name;
  }
  GptModel gpt2(GptConfig::Preset("gpt2-124m").value());
  EXPECT_EQ(gpt2.NumParameters(), 124439808);  // Hugging Face gpt2 (tied head counted once)
  EXPECT_FALSE(GptConfig::Preset("huge").ok());
  GptConfig bad = SmallConfig(GptConfig::Mlp::kGelu, GptConfig::Norm::kLayerNorm);
  bad.num_heads = 3;
  EXPECT_EQ(bad.Validate().code(), absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace loom::models
