// Typed access to environment variables, with errors that name the variable.
//
//   LOOM_ASSIGN_OR_RETURN(int64_t threads, base::GetEnvInt("LOOM_NUM_THREADS", 0));
//   if (base::GetEnvBool("LOOM_DEBUG_COLLECTIVES", false).value_or(false)) { ... }
#pragma once

#include <cstdint>
#include <optional>
#include <string>

#include "absl/status/statusor.h"

namespace loom::base {

// The variable's value, or nullopt when unset. An empty value counts as set.
std::optional<std::string> GetEnv(const char* name);

// Integer value, `fallback` when unset or empty; InvalidArgument naming the variable when the value
// is not a base-10 integer.
absl::StatusOr<int64_t> GetEnvInt(const char* name, int64_t fallback);

// Accepts 1/0, true/false, yes/no, on/off (any case); `fallback` when unset or empty.
absl::StatusOr<bool> GetEnvBool(const char* name, bool fallback);

}  // namespace loom::base
