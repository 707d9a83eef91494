#include "optim/loss_scaler.h"

#include <gtest/gtest.h>

namespace loom::optim {
namespace {

TEST(DynamicLossScaler, StartsAt2To16HalvesOnOverflowAndDoublesAfterTheWindow) {
  DynamicLossScaler s;
  EXPECT_EQ(s.scale(), 65536.0f);
  EXPECT_FALSE(s.Update(/*gradients_finite=*/false));
  EXPECT_EQ(s.scale(), 32768.0f);
  EXPECT_EQ(s.skipped_steps(), 1);
  for (int i = 0; i < 1999; ++i) ASSERT_TRUE(s.Update(true));
  EXPECT_EQ(s.scale(), 32768.0f);  // 1999 clean steps: not yet
  EXPECT_TRUE(s.Update(true));
  EXPECT_EQ(s.scale(), 65536.0f);  // the 2000th
  EXPECT_EQ(s.clean_steps(), 0);
}

TEST(DynamicLossScaler, AnOverflowRestartsTheCleanCount) {
  DynamicLossScaler s({.initial_scale = 8.0f, .growth_interval = 3});
  EXPECT_TRUE(s.Update(true));
  EXPECT_TRUE(s.Update(true));
  EXPECT_FALSE(s.Update(false));
  EXPECT_EQ(s.scale(), 4.0f);
  EXPECT_TRUE(s.Update(true));
  EXPECT_TRUE(s.Update(true));
  EXPECT_EQ(s.scale(), 4.0f);
  EXPECT_TRUE(s.Update(true));
  EXPECT_EQ(s.scale(), 8.0f);
}

TEST(DynamicLossScaler, NeverGoesBelowTheMinimum) {
  DynamicLossScaler s({.initial_scale = 2.0f, .min_scale = 1.0f});
  EXPECT_FALSE(s.Update(false));
  EXPECT_FALSE(s.Update(false));
  EXPECT_EQ(s.scale(), 1.0f);
}

}  // namespace
}  // namespace loom::optim
