#include "runtime/base/stop_signal.h"

#include <pthread.h>
#include <signal.h>

#include <atomic>
#include <mutex>
#include <thread>

namespace loom::base {
namespace {

std::atomic<int> received{0};

sigset_t StopSignals() {
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGTERM);
  sigaddset(&set, SIGUSR1);
  return set;
}

}  // namespace

void BlockStopSignals() {
  const sigset_t set = StopSignals();
  pthread_sigmask(SIG_BLOCK, &set, nullptr);
}

void StartStopSignalWatcher() {
  static std::once_flag once;
  std::call_once(once, [] {
    std::thread([] {
      const sigset_t set = StopSignals();
      for (;;) {
        int signal = 0;
        if (sigwait(&set, &signal) != 0) continue;
        int none = 0;
        received.compare_exchange_strong(none, signal);  // keep the first
      }
    }).detach();
  });
}

void UnblockStopSignals() {
  const sigset_t set = StopSignals();
  pthread_sigmask(SIG_UNBLOCK, &set, nullptr);
}

int StopSignalReceived() { return received.load(); }

const char* SignalName(int signal) {
  if (signal == SIGTERM) return "SIGTERM";
  if (signal == SIGUSR1) return "SIGUSR1";
  return "another signal";
}

}  // namespace loom::base
