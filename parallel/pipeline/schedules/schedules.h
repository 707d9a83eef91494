// The schedule generators, one per file, and the registry `--schedule` picks from.
//
//   LOOM_ASSIGN_OR_RETURN(Schedule s, MakeSchedule("zb-h1", {.ranks = 4, .micro_batches = 8}));
//
// gpipe        all forwards, then all backwards (B then W per micro-batch)
// 1f1b         warm-up forwards, then one forward one backward (PipeDream-flush / Megatron)
// interleaved  1F1B over `virtual_stages` chunks per rank (Megatron's interleaved schedule;
//              micro-batches a multiple of the ranks)
// zb-h1        zero bubble H1 (Qi et al. 2023): B before F before W, 1F1B's activation peak
//              per rank, so W fills the bubbles 1F1B leaves (a third of 1F1B's bubble)
// zb-v         zero bubble V: two chunks per rank placed in a V (rank r holds stages r and
//              2p - 1 - r), the same greedy order, at most 2p chunk stashes per rank
// dualpipe-v   DeepSeek's DualPipe-V on the same V placement: forward of one micro-batch
//              paired with backward of another in the steady state, W deferred at the ends
//              (micro-batches >= 2 x ranks)
// Each returns the schedule with its transfers inserted; MakeSchedule validates the options with
// messages that say what to change and checks the result (CheckSchedule).
#pragma once

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "parallel/pipeline/ir.h"

namespace loom::parallel::pipeline {

struct ScheduleOptions {
  int ranks = 1;
  int micro_batches = 1;
  int virtual_stages = 2;  // interleaved: chunks per rank
};

absl::StatusOr<Schedule> MakeSchedule(absl::string_view name, const ScheduleOptions& options);
std::vector<std::string> ScheduleNames();

Schedule GPipe(const ScheduleOptions& o);
Schedule OneFOneB(const ScheduleOptions& o);
Schedule Interleaved1F1B(const ScheduleOptions& o);
Schedule ZeroBubbleH1(const ScheduleOptions& o);
Schedule ZeroBubbleV(const ScheduleOptions& o);
Schedule DualPipeV(const ScheduleOptions& o);

// The list scheduler behind the zero-bubble schedules: runs unit-cost ops in time steps; a free
// rank takes a ready B (earliest micro-batch), else a ready F (deepest stage, then earliest
// micro-batch) while it has fewer than until_b[r] micro-batches between F and B (the zero-bubble
// paper's activation accounting: B frees what only it needs) and fewer than until_w[r] between F
// and W (loom's stashes, which W still reads), else a pending W (oldest). Returns the schedule
// with its transfers.
Schedule GreedyZeroBubble(const std::string& name, const Placement& placement, int micro_batches,
                          const std::vector<int>& until_b, const std::vector<int>& until_w);

}  // namespace loom::parallel::pipeline
