#include "runtime/base/check.h"

#include <cstdio>
#include <cstdlib>
#include <string>

#include "runtime/base/logging.h"

namespace loom::base::internal {

CheckFailure::CheckFailure(const char* file, int line, const char* condition) {
  stream_ << RankPrefix() << "CHECK failed at " << file << ':' << line << ": " << condition << ": ";
}

CheckFailure::~CheckFailure() {
  stream_ << '\n';
  const std::string s = stream_.str();
  std::fwrite(s.data(), 1, s.size(), stderr);
  std::fflush(stderr);
  std::abort();
}

}  // namespace loom::base::internal
