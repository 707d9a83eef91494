#include "parallel/pipeline/schedules/schedules.h"

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "parallel/pipeline/check.h"
#include "runtime/base/status_macros.h"

namespace loom::parallel::pipeline {

std::vector<std::string> ScheduleNames() {
  return {"gpipe", "1f1b", "interleaved", "zb-h1", "zb-v", "dualpipe-v"};
}

absl::StatusOr<Schedule> MakeSchedule(absl::string_view name, const ScheduleOptions& o) {
  auto bad = [&](auto... parts) {
    return absl::InvalidArgumentError(absl::StrCat("--schedule ", name, ": ", parts...));
  };
  if (o.ranks < 1) return bad("--pp must be >= 1, got ", o.ranks);
  if (o.micro_batches < 1) return bad("--micro_batches must be >= 1, got ", o.micro_batches);
  Schedule s;
  if (name == "gpipe") {
    s = GPipe(o);
  } else if (name == "1f1b") {
    s = OneFOneB(o);
  } else if (name == "interleaved") {
    if (o.virtual_stages < 2) {
      return bad("needs --virtual_stages >= 2 (chunks per rank), got ", o.virtual_stages);
    }
    if (o.micro_batches % o.ranks != 0) {
      return bad("needs --micro_batches a multiple of --pp ", o.ranks, ", got ", o.micro_batches,
                 "; use ", (o.micro_batches / o.ranks + 1) * o.ranks);
    }
    s = Interleaved1F1B(o);
  } else if (name == "zb-h1") {
    s = ZeroBubbleH1(o);
  } else if (name == "zb-v") {
    s = ZeroBubbleV(o);
  } else if (name == "dualpipe-v") {
    if (o.micro_batches < 2 * o.ranks) {
      return bad("needs --micro_batches >= 2 x --pp = ", 2 * o.ranks, ", got ", o.micro_batches);
    }
    s = DualPipeV(o);
  } else {
    return absl::InvalidArgumentError(absl::StrCat(
        "unknown --schedule '", name, "'; choose one of ", absl::StrJoin(ScheduleNames(), ", ")));
  }
  LOOM_RETURN_IF_ERROR(CheckSchedule(s));
  return s;
}

}  // namespace loom::parallel::pipeline
