// Rank-prefixed logging and the process's rank identity.
//
//   loom::base::SetProcessRank(3);
//   LOOM_LOG(INFO) << "step " << step << " loss " << loss;
//   // stderr: "[rank 3] I 20:41:07.123 train.cc:88] step 10 loss 3.21"
//
// The rank is per process (set once after MPI init, or read from the launcher's environment), and
// may be overridden per thread so the `local` backend's thread-ranks log as themselves.
#pragma once

#include <sstream>

namespace loom::base {

// Rank used in log and CHECK prefixes: the thread's override if set, else the process rank, else
// the launcher's OMPI_COMM_WORLD_RANK / PMI_RANK, else -1 (printed as "?").
int CurrentRank();
void SetProcessRank(int rank);
// Overrides the rank for the calling thread only; -1 clears the override.
void SetThreadRank(int rank);

enum class LogSeverity { kInfo, kWarning, kError };

namespace internal {

// Collects one log line and writes it to stderr, whole, in its destructor.
class LogMessage {
 public:
  LogMessage(const char* file, int line, LogSeverity severity);
  ~LogMessage();
  LogMessage(const LogMessage&) = delete;
  LogMessage& operator=(const LogMessage&) = delete;
  std::ostream& stream() { return stream_; }

 private:
  std::ostringstream stream_;
};

// Returns "[rank R] " (or "[rank ?] ") for prefixes.
std::string RankPrefix();

}  // namespace internal
}  // namespace loom::base

#define LOOM_LOG_SEVERITY_INFO ::loom::base::LogSeverity::kInfo
#define LOOM_LOG_SEVERITY_WARNING ::loom::base::LogSeverity::kWarning
#define LOOM_LOG_SEVERITY_ERROR ::loom::base::LogSeverity::kError

// LOOM_LOG(INFO|WARNING|ERROR) << ...; one line to stderr with rank, severity, time, file:line.
#define LOOM_LOG(severity) \
  ::loom::base::internal::LogMessage(__FILE__, __LINE__, LOOM_LOG_SEVERITY_##severity).stream()
