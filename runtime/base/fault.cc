#include "runtime/base/fault.h"

#include <signal.h>

#include <cerrno>
#include <string>
#include <vector>

#include "absl/strings/str_split.h"
#include "runtime/base/check.h"
#include "runtime/base/env.h"

namespace loom::base {
namespace {

struct Fault {
  bool set = false;
  std::string point;
  int error = 0;  // 0: kill
  std::string subject;
};

int ErrnoByName(absl::string_view name) {
  static const std::pair<absl::string_view, int> kErrors[] = {
      {"ENOSPC", ENOSPC}, {"EIO", EIO}, {"EDQUOT", EDQUOT}, {"EROFS", EROFS}, {"EACCES", EACCES}};
  for (const auto& [n, e] : kErrors) {
    if (n == name) return e;
  }
  return -1;
}

Fault Parse() {
  Fault f;
  const std::optional<std::string> env = GetEnv("LOOM_FAULT");
  if (!env.has_value() || env->empty()) return f;
  const std::vector<std::string> parts = absl::StrSplit(*env, absl::MaxSplits(':', 2));
  LOOM_CHECK_GE(parts.size(), 2u) << "LOOM_FAULT=" << *env
                                  << ": expected <point>:<action>[:<subject substring>]";
  f.set = true;
  f.point = parts[0];
  if (parts[1] != "kill") {
    f.error = ErrnoByName(parts[1]);
    LOOM_CHECK_GT(f.error, 0) << "LOOM_FAULT=" << *env << ": action '" << parts[1]
                              << "' is not kill, ENOSPC, EIO, EDQUOT, EROFS or EACCES";
  }
  if (parts.size() == 3) f.subject = parts[2];
  return f;
}

}  // namespace

int FaultAt(absl::string_view point, absl::string_view subject) {
  static const Fault fault = Parse();
  if (!fault.set || point != fault.point) return 0;
  if (!fault.subject.empty() && subject.find(fault.subject) == absl::string_view::npos) return 0;
  if (fault.error == 0) raise(SIGKILL);
  return fault.error;
}

}  // namespace loom::base
