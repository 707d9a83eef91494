// A scheduler latency hint for threads that mostly sleep and must run the moment they wake (a
// communicator's progress thread): on Linux 6.12+ (EEVDF), a SCHED_OTHER thread with a short
// requested slice gets an earlier deadline when it wakes, so it preempts a running compute thread
// at once instead of waiting out that thread's slice. Its CPU share (weight, nice) is unchanged,
// and no privilege is needed. Older kernels accept and ignore the request.
#pragma once

#include "absl/status/status.h"
#include "absl/time/time.h"

namespace loom::base {

// Requests `slice` (clamped to the kernel's 0.1-100 ms) for the calling thread; an error names
// the system call's failure (the thread keeps the default slice).
absl::Status SetThreadSlice(absl::Duration slice);

}  // namespace loom::base
