#include "runtime/base/thread_slice.h"

#include <sched.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdint>
#include <cstring>

#include "absl/strings/str_cat.h"

namespace loom::base {
namespace {

// struct sched_attr of sched_setattr(2); glibc 2.36 has no wrapper.
struct SchedAttr {
  uint32_t size;
  uint32_t sched_policy;
  uint64_t sched_flags;
  int32_t sched_nice;
  uint32_t sched_priority;
  uint64_t sched_runtime;  // SCHED_OTHER on Linux 6.12+: the requested slice
  uint64_t sched_deadline;
  uint64_t sched_period;
  uint32_t sched_util_min;
  uint32_t sched_util_max;
};

}  // namespace

absl::Status SetThreadSlice(absl::Duration slice) {
  const int64_t ns = std::clamp<int64_t>(absl::ToInt64Nanoseconds(slice), 100'000, 100'000'000);
  SchedAttr attr{};
  attr.size = sizeof(attr);
  attr.sched_policy = SCHED_OTHER;
  // The thread's nice value is kept as it is.
  errno = 0;
  attr.sched_nice = getpriority(PRIO_PROCESS, 0);
  attr.sched_runtime = static_cast<uint64_t>(ns);
  if (syscall(SYS_sched_setattr, 0, &attr, 0) != 0) {
    return absl::InternalError(
        absl::StrCat("sched_setattr(slice ", ns / 1000, " us): ", std::strerror(errno)));
  }
  return absl::OkStatus();
}

}  // namespace loom::base
