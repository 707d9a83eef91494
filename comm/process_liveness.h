// Whether a peer process on this host is still running, so a rank waiting for a peer that was
// killed (SIGKILL, the OOM killer, a crash) fails within a fraction of a second with a message
// naming it, instead of waiting out the communicator's timeout.
//
//   if (ProcessExited(peer_pid)) return absl::AbortedError("rank 1 (pid 4242) has exited");
#pragma once

#include <sys/types.h>

namespace loom::comm {

// True if no process `pid` exists in this PID namespace, or it has exited and not yet been reaped
// (a zombie: its launcher has not noticed yet).
bool ProcessExited(pid_t pid);

}  // namespace loom::comm
