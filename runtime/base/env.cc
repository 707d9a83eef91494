#include "runtime/base/env.h"

#include <cstdlib>

#include "absl/status/status.h"
#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"

namespace loom::base {

std::optional<std::string> GetEnv(const char* name) {
  const char* v = std::getenv(name);
  if (v == nullptr) return std::nullopt;
  return std::string(v);
}

absl::StatusOr<int64_t> GetEnvInt(const char* name, int64_t fallback) {
  const std::optional<std::string> v = GetEnv(name);
  if (!v.has_value() || v->empty()) return fallback;
  int64_t out = 0;
  if (!absl::SimpleAtoi(*v, &out)) {
    return absl::InvalidArgumentError(
        absl::StrCat("environment variable ", name, "='", *v, "' is not an integer"));
  }
  return out;
}

absl::StatusOr<bool> GetEnvBool(const char* name, bool fallback) {
  const std::optional<std::string> v = GetEnv(name);
  if (!v.has_value() || v->empty()) return fallback;
  const std::string s = absl::AsciiStrToLower(*v);
  if (s == "1" || s == "true" || s == "yes" || s == "on") return true;
  if (s == "0" || s == "false" || s == "no" || s == "off") return false;
  return absl::InvalidArgumentError(absl::StrCat("environment variable ", name, "='", *v,
                                                 "' is not a boolean (use 1/0, true/false)"));
}

}  // namespace loom::base
