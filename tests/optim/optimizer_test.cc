// AdamW and SGD through the slot API: torch.optim semantics evaluated in double, decay only on
// decay slots, and save/restore of state continuing bit for bit.
#include "optim/optimizer.h"

#include <gtest/gtest.h>

#include <cmath>

namespace loom::optim {
namespace {

using runtime::DType;
using runtime::MemoryTag;
using runtime::Tensor;

Tensor Vec(std::vector<float> v, MemoryTag tag = MemoryTag::kParam) {
  const int64_t n = static_cast<int64_t>(v.size());
  return Tensor::FromVector<float>({n}, v, tag);
}

TEST(AdamWTest, DecayOnlyOnDecaySlots) {
  AdamW opt({.beta1 = 0.9f, .beta2 = 0.99f, .eps = 1e-8f, .weight_decay = 0.5f});
  Tensor w = Vec({1.0f}), b = Vec({1.0f});
  Tensor gw = Vec({0.5f}, MemoryTag::kGrad), gb = Vec({0.5f}, MemoryTag::kGrad);
  opt.Step({{"w", w, gw, true}, {"b", b, gb, false}}, 0.1f);
  // Step 1: mhat = g, vhat = g², update = lr·g/(|g| + eps) = 0.1; decay multiplies by 1 - lr·wd.
  EXPECT_NEAR(w.data<float>()[0], 1.0 * (1 - 0.05) - 0.1, 1e-6);
  EXPECT_NEAR(b.data<float>()[0], 1.0 - 0.1, 1e-6);
  EXPECT_EQ(opt.step(), 1);
}

TEST(SgdTest, MatchesTorchMomentum) {
  Sgd opt({.momentum = 0.5f, .weight_decay = 0.0f});
  Tensor p = Vec({2.0f});
  Tensor g = Vec({1.0f}, MemoryTag::kGrad);
  opt.Step({{"p", p, g, false}}, 0.1f);  // buf = 1, p = 1.9
  EXPECT_FLOAT_EQ(p.data<float>()[0], 1.9f);
  opt.Step({{"p", p, g, false}}, 0.1f);  // buf = 0.5 + 1 = 1.5, p = 1.75
  EXPECT_FLOAT_EQ(p.data<float>()[0], 1.75f);
}

template <typename Opt, typename Options>
void CheckSaveRestoreContinuesBitwise(Options options) {
  auto run = [&](Opt& opt, Tensor& p, int from, int to) {
    for (int s = from; s < to; ++s) {
      Tensor g = Vec({std::sin(1.0f + s), std::cos(2.0f * s)}, MemoryTag::kGrad);
      opt.Step({{"p", p, g, true}}, 0.01f);
    }
  };
  Opt straight(options);
  Tensor p1 = Vec({0.3f, -0.7f});
  run(straight, p1, 0, 6);

  Opt first(options);
  Tensor p2 = Vec({0.3f, -0.7f});
  run(first, p2, 0, 3);
  Opt resumed(options);
  ASSERT_TRUE(resumed.LoadState(first.State(), first.step()).ok());
  run(resumed, p2, 3, 6);
  EXPECT_EQ(p1.ToF32Vector(), p2.ToF32Vector());
  EXPECT_EQ(resumed.step(), 6);
}

TEST(OptimizerTest, SaveRestoreContinuesBitwise) {
  CheckSaveRestoreContinuesBitwise<AdamW>(AdamWOptions{});
  CheckSaveRestoreContinuesBitwise<Sgd>(SgdOptions{});
}

TEST(OptimizerTest, LoadStateRejectsIncompleteState) {
  AdamW opt({});
  Tensor m = Vec({0.0f, 0.0f}, MemoryTag::kOptimizer);
  EXPECT_FALSE(opt.LoadState({{"p.exp_avg", m}}, 3).ok());
  Tensor v3 = Vec({0.0f, 0.0f, 0.0f}, MemoryTag::kOptimizer);
  EXPECT_FALSE(opt.LoadState({{"p.exp_avg", m}, {"p.exp_avg_sq", v3}}, 3).ok());
}

TEST(OptimizerDeathTest, MissingStateAfterResumeAborts) {
  AdamW opt({});
  ASSERT_TRUE(opt.LoadState({}, 5).ok());
  Tensor p = Vec({1.0f}), g = Vec({1.0f}, MemoryTag::kGrad);
  EXPECT_DEATH(opt.Step({{"p", p, g, true}}, 0.1f), "no state for parameter 'p' at step 6");
}

}  // namespace
}  // namespace loom::optim
