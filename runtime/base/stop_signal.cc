#include "runtime/base/stop_signal.h"

#include <signal.h>

#include <atomic>

namespace loom::base {
namespace {

std::atomic<int> received{0};
static_assert(std::atomic<int>::is_always_lock_free, "the handler must be async-signal-safe");

void OnStopSignal(int signal) {
  int none = 0;
  received.compare_exchange_strong(none, signal);  // keep the first
}

}  // namespace

void InstallStopSignalHandlers() {
  struct sigaction action = {};
  action.sa_handler = OnStopSignal;
  sigemptyset(&action.sa_mask);
  action.sa_flags = SA_RESTART;  // system calls in progress continue
  sigaction(SIGTERM, &action, nullptr);
  sigaction(SIGUSR1, &action, nullptr);
}

int StopSignalReceived() { return received.load(); }

const char* SignalName(int signal) {
  switch (signal) {
    case SIGTERM:
      return "SIGTERM";
    case SIGUSR1:
      return "SIGUSR1";
    case SIGINT:
      return "SIGINT";
    case SIGKILL:
      return "SIGKILL";
    default:
      return "another signal";
  }
}

}  // namespace loom::base
