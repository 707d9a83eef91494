// LOOM_RETURN_IF_ERROR / LOOM_ASSIGN_OR_RETURN propagate errors and values, evaluating once.
#include "runtime/base/status_macros.h"

#include <gtest/gtest.h>

#include <memory>

namespace loom::base {
namespace {

absl::StatusOr<int> Parse(bool ok, int value) {
  if (!ok) return absl::InvalidArgumentError("bad value");
  return value;
}

absl::Status Twice(bool ok, int* out, int* calls) {
  ++*calls;
  LOOM_ASSIGN_OR_RETURN(int v, Parse(ok, 21));
  *out = 2 * v;
  return absl::OkStatus();
}

absl::Status Chain(bool ok, int* out, int* calls) {
  LOOM_RETURN_IF_ERROR(Twice(ok, out, calls));
  *out += 1;
  return absl::OkStatus();
}

TEST(StatusMacrosTest, PropagatesValue) {
  int out = 0, calls = 0;
  EXPECT_TRUE(Chain(true, &out, &calls).ok());
  EXPECT_EQ(out, 43);
  EXPECT_EQ(calls, 1);
}

TEST(StatusMacrosTest, PropagatesErrorUnchanged) {
  int out = 7, calls = 0;
  const absl::Status s = Chain(false, &out, &calls);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(s.message(), "bad value");
  EXPECT_EQ(out, 7);
  EXPECT_EQ(calls, 1);
}

absl::StatusOr<std::unique_ptr<int>> MakeBox(int v) { return std::make_unique<int>(v); }

absl::Status AssignExisting(int* out) {
  std::unique_ptr<int> box;
  LOOM_ASSIGN_OR_RETURN(box, MakeBox(5));  // move-only values into an existing variable
  LOOM_ASSIGN_OR_RETURN(auto second, MakeBox(6));
  *out = *box + *second;
  return absl::OkStatus();
}

TEST(StatusMacrosTest, MoveOnlyAndExistingVariable) {
  int out = 0;
  ASSERT_TRUE(AssignExisting(&out).ok());
  EXPECT_EQ(out, 11);
}

}  // namespace
}  // namespace loom::base
