// LOOM_CHECK aborts with file:line, rank and the message; logging carries the rank prefix.
#include "runtime/base/check.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <algorithm>

#include "runtime/base/logging.h"

namespace loom::base {
namespace {

TEST(CheckDeathTest, FailedCheckNamesFileLineRankAndMessage) {
  EXPECT_DEATH(
      {
        SetProcessRank(3);
        LOOM_CHECK(1 + 1 == 3) << "arithmetic is "
                               << "broken";
      },
      R"(\[rank 3\] CHECK failed at .*check_test\.cc:[0-9]+: 1 \+ 1 == 3: arithmetic is broken)");
}

TEST(CheckDeathTest, ComparisonCheckPrintsBothValues) {
  const int a = 4, b = 5;
  EXPECT_DEATH(LOOM_CHECK_EQ(a, b) << "sizes", R"(a == b: \(4 vs 5\) sizes)");
}

TEST(CheckTest, PassingCheckDoesNotEvaluateMessage) {
  int evaluated = 0;
  LOOM_CHECK(true) << ++evaluated;
  LOOM_CHECK_LT(1, 2) << ++evaluated;
  EXPECT_EQ(evaluated, 0);
}

TEST(CheckTest, DanglingElseBindsToCallerIf) {
  bool reached_else = false;
  if (false)
    LOOM_CHECK(true) << "never";
  else
    reached_else = true;
  EXPECT_TRUE(reached_else);
}

TEST(LoggingTest, ThreadRankOverridesProcessRank) {
  SetProcessRank(1);
  EXPECT_EQ(CurrentRank(), 1);
  SetThreadRank(5);
  EXPECT_EQ(CurrentRank(), 5);
  EXPECT_EQ(internal::RankPrefix(), "[rank 5] ");
  SetThreadRank(-1);
  EXPECT_EQ(CurrentRank(), 1);
  ::testing::internal::CaptureStderr();
  LOOM_LOG(WARNING) << "hello " << 42;
  const std::string err = ::testing::internal::GetCapturedStderr();
  EXPECT_THAT(
      err, ::testing::ContainsRegex(R"(^\[rank 1\] W [0-9:.]+ check_test\.cc:[0-9]+\] hello 42)"));
  EXPECT_EQ(err.back(), '\n');
  EXPECT_EQ(std::count(err.begin(), err.end(), '\n'), 1);
}

}  // namespace
}  // namespace loom::base
