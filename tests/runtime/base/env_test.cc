// Env helpers parse integers and booleans and name the variable in errors.
#include "runtime/base/env.h"

#include <gtest/gtest.h>

#include <cstdlib>

namespace loom::base {
namespace {

TEST(EnvTest, IntParsingAndFallback) {
  unsetenv("LOOM_TEST_INT");
  EXPECT_EQ(GetEnvInt("LOOM_TEST_INT", 7).value(), 7);
  setenv("LOOM_TEST_INT", "", 1);
  EXPECT_EQ(GetEnvInt("LOOM_TEST_INT", 7).value(), 7);
  setenv("LOOM_TEST_INT", "-12", 1);
  EXPECT_EQ(GetEnvInt("LOOM_TEST_INT", 7).value(), -12);
  setenv("LOOM_TEST_INT", "12abc", 1);
  const absl::StatusOr<int64_t> bad = GetEnvInt("LOOM_TEST_INT", 7);
  ASSERT_FALSE(bad.ok());
  EXPECT_EQ(bad.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(bad.status().message().find("LOOM_TEST_INT='12abc'"), absl::string_view::npos);
  unsetenv("LOOM_TEST_INT");
}

TEST(EnvTest, BoolSpellings) {
  struct Case {
    const char* value;
    bool expected;
  };
  for (const Case& c :
       {Case{"1", true}, Case{"TRUE", true}, Case{"yes", true}, Case{"On", true}, Case{"0", false},
        Case{"false", false}, Case{"NO", false}, Case{"off", false}}) {
    setenv("LOOM_TEST_BOOL", c.value, 1);
    EXPECT_EQ(GetEnvBool("LOOM_TEST_BOOL", !c.expected).value(), c.expected) << c.value;
  }
  setenv("LOOM_TEST_BOOL", "maybe", 1);
  EXPECT_FALSE(GetEnvBool("LOOM_TEST_BOOL", false).ok());
  unsetenv("LOOM_TEST_BOOL");
  EXPECT_TRUE(GetEnvBool("LOOM_TEST_BOOL", true).value());
  EXPECT_FALSE(GetEnv("LOOM_TEST_BOOL").has_value());
}

}  // namespace
}  // namespace loom::base
