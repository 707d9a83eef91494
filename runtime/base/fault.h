// Fault injection for the fault suite (tests/fault/): named points in loom's code where a test can
// make the process fail the way real hardware and file systems do, chosen by one environment
// variable, so the program under test is the shipped binary.
//
//   LOOM_FAULT=<point>:<action>[:<subject substring>]
//
//   LOOM_FAULT=checkpoint.commit:kill:step-00000010   # SIGKILL just before step 10's COMMIT
//   LOOM_FAULT=file.write:ENOSPC:step-00000020         # writes of step 20's files fail, disk full
//
// Actions: `kill` (the process SIGKILLs itself: no handler, no cleanup, as a crash or the OOM
// killer), or an errno name (ENOSPC, EIO, EDQUOT, EROFS, EACCES): the point reports that error as
// the system call it stands for would. Without the subject part a point fires at every hit;
// with it, only where the point's subject (a path, say) contains the substring. Unset: every
// point is a no-op costing one cached branch.
//
// Points: file.write (runtime/io/file.cc: appending to a file being written atomically; subject:
// the final path) and checkpoint.commit (runtime/io/checkpoint.cc: every file and MANIFEST written,
// COMMIT not yet; subject: the checkpoint directory).
#pragma once

#include "absl/strings/string_view.h"

namespace loom::base {

// 0 when the point does not fire here; otherwise the errno to report (a `kill` point does not
// return). A malformed LOOM_FAULT is a fatal error naming the variable, at the first hit.
int FaultAt(absl::string_view point, absl::string_view subject);

}  // namespace loom::base
