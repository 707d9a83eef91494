// Cosine schedule values at hand-computed points; gradient norm and clipping on integer data.
#include "optim/lr_schedule.h"

#include <gtest/gtest.h>

#include "optim/grad_norm.h"

namespace loom::optim {
namespace {

TEST(CosineScheduleTest, WarmupThenCosine) {
  CosineSchedule s({.max_lr = 1.0f, .min_lr = 0.1f, .warmup_steps = 4, .total_steps = 14});
  ASSERT_TRUE(s.Validate().ok());
  EXPECT_FLOAT_EQ(s.At(0), 0.25f);
  EXPECT_FLOAT_EQ(s.At(3), 1.0f);
  EXPECT_FLOAT_EQ(s.At(4), 1.0f);    // progress 0
  EXPECT_FLOAT_EQ(s.At(9), 0.55f);   // progress ½: 0.1 + 0.45·(1 + cos(π/2))
  EXPECT_FLOAT_EQ(s.At(14), 0.1f);   // progress 1
  EXPECT_FLOAT_EQ(s.At(100), 0.1f);  // clamped
}

TEST(CosineScheduleTest, ValidationNamesTheProblem) {
  EXPECT_FALSE(CosineSchedule({.max_lr = 0.0f}).Validate().ok());
  EXPECT_FALSE(CosineSchedule({.max_lr = 1.0f, .min_lr = 2.0f}).Validate().ok());
  EXPECT_FALSE(CosineSchedule({.max_lr = 1.0f, .warmup_steps = -1}).Validate().ok());
  EXPECT_NE(CosineSchedule({.max_lr = 1.0f, .total_steps = 0}).Validate().message().find("total"),
            std::string::npos);
}

TEST(GradNormTest, NormAndClip) {
  using runtime::Tensor;
  Tensor a = Tensor::FromVector<float>({2}, {3, 4}, runtime::MemoryTag::kGrad);
  Tensor b = Tensor::FromVector<float>({1}, {12}, runtime::MemoryTag::kGrad);
  EXPECT_DOUBLE_EQ(GlobalGradNorm({a, b}), 13.0);
  EXPECT_DOUBLE_EQ(ClipGradNorm({a, b}, 26.0), 13.0);  // below the limit: unchanged
  EXPECT_EQ(a.data<float>()[0], 3.0f);
  EXPECT_DOUBLE_EQ(ClipGradNorm({a, b}, 6.5), 13.0);
  EXPECT_FLOAT_EQ(a.data<float>()[0], 1.5f);
  EXPECT_FLOAT_EQ(b.data<float>()[0], 6.0f);
  EXPECT_NEAR(GlobalGradNorm({a, b}), 6.5, 1e-6);
}

}  // namespace
}  // namespace loom::optim
