// Always-on invariant checks for programmer errors. A failed check prints
// "[rank R] CHECK failed at file:line: <condition>: <message>" to stderr and aborts the process
// (under mpirun this takes the job down, so no peer waits forever).
//
//   LOOM_CHECK(x.dtype() == DType::kF32) << "LayerNorm: x must be f32, got " << x.dtype();
//   LOOM_CHECK_EQ(a.dim(1), b.dim(0)) << "Matmul: inner dimensions differ";
//
// Bad user input (config, files, flags) is not a programmer error: return absl::Status instead.
#pragma once

#include <sstream>

#include "absl/base/optimization.h"

namespace loom::base::internal {

// Accumulates the message of a failed check; the destructor prints it and aborts.
class CheckFailure {
 public:
  CheckFailure(const char* file, int line, const char* condition);
  [[noreturn]] ~CheckFailure();
  CheckFailure(const CheckFailure&) = delete;
  CheckFailure& operator=(const CheckFailure&) = delete;
  std::ostream& stream() { return stream_; }

 private:
  std::ostringstream stream_;
};

}  // namespace loom::base::internal

// `while` rather than `if` so a trailing `else` cannot bind to it; the body never repeats because
// the CheckFailure destructor does not return.
#define LOOM_CHECK(cond)              \
  while (ABSL_PREDICT_FALSE(!(cond))) \
  ::loom::base::internal::CheckFailure(__FILE__, __LINE__, #cond).stream()

#define LOOM_CHECK_OP(a, op, b)                                                        \
  while (ABSL_PREDICT_FALSE(!((a)op(b))))                                              \
  ::loom::base::internal::CheckFailure(__FILE__, __LINE__, #a " " #op " " #b).stream() \
      << "(" << (a) << " vs " << (b) << ") "

#define LOOM_CHECK_EQ(a, b) LOOM_CHECK_OP(a, ==, b)
#define LOOM_CHECK_NE(a, b) LOOM_CHECK_OP(a, !=, b)
#define LOOM_CHECK_LT(a, b) LOOM_CHECK_OP(a, <, b)
#define LOOM_CHECK_LE(a, b) LOOM_CHECK_OP(a, <=, b)
#define LOOM_CHECK_GT(a, b) LOOM_CHECK_OP(a, >, b)
#define LOOM_CHECK_GE(a, b) LOOM_CHECK_OP(a, >=, b)
