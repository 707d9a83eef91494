#include "runtime/base/logging.h"

#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <string>

#include "absl/strings/numbers.h"

namespace loom::base {
namespace {

std::atomic<int> g_process_rank{-2};  // -2: not set, look at the environment.
thread_local int t_thread_rank = -1;

int RankFromEnvironment() {
  for (const char* name : {"OMPI_COMM_WORLD_RANK", "PMI_RANK", "LOOM_RANK"}) {
    const char* v = std::getenv(name);
    int rank = 0;
    if (v != nullptr && absl::SimpleAtoi(v, &rank)) return rank;
  }
  return -1;
}

const char* Basename(const char* path) {
  const char* base = path;
  for (const char* p = path; *p != '\0'; ++p) {
    if (*p == '/') base = p + 1;
  }
  return base;
}

char SeverityLetter(LogSeverity s) {
  switch (s) {
    case LogSeverity::kInfo:
      return 'I';
    case LogSeverity::kWarning:
      return 'W';
    case LogSeverity::kError:
      return 'E';
  }
  return '?';
}

}  // namespace

int CurrentRank() {
  if (t_thread_rank >= 0) return t_thread_rank;
  int r = g_process_rank.load(std::memory_order_relaxed);
  if (r == -2) {
    r = RankFromEnvironment();
    g_process_rank.store(r, std::memory_order_relaxed);
  }
  return r;
}

void SetProcessRank(int rank) { g_process_rank.store(rank, std::memory_order_relaxed); }
void SetThreadRank(int rank) { t_thread_rank = rank; }

namespace internal {

std::string RankPrefix() {
  const int r = CurrentRank();
  return r >= 0 ? "[rank " + std::to_string(r) + "] " : std::string("[rank ?] ");
}

LogMessage::LogMessage(const char* file, int line, LogSeverity severity) {
  using Clock = std::chrono::system_clock;
  const auto now = Clock::now();
  const std::time_t t = Clock::to_time_t(now);
  const int ms = static_cast<int>(
      std::chrono::duration_cast<std::chrono::milliseconds>(now.time_since_epoch()).count() % 1000);
  std::tm tm{};
  localtime_r(&t, &tm);
  char buf[32];
  std::snprintf(buf, sizeof(buf), "%02d:%02d:%02d.%03d", tm.tm_hour, tm.tm_min, tm.tm_sec, ms);
  stream_ << RankPrefix() << SeverityLetter(severity) << ' ' << buf << ' ' << Basename(file) << ':'
          << line << "] ";
}

LogMessage::~LogMessage() {
  stream_ << '\n';
  const std::string s = stream_.str();
  std::fwrite(s.data(), 1, s.size(), stderr);
  std::fflush(stderr);
}

}  // namespace internal
}  // namespace loom::base
