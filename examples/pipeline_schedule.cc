// pipeline_schedule: generates a pipeline schedule, checks it and prints its simulated timeline,
// without running a model.
//
//   pipeline_schedule --schedule zb-h1 --pp 4 --micro_batches 8
//   pipeline_schedule --schedule 1f1b --pp 4 --micro_batches 8 --backward_input 2 --backward_weight
//   0 pipeline_schedule --schedule interleaved --pp 4 --micro_batches 8 --virtual_stages 2 --ops
//
// Prints each rank's compute order (F/B/W with micro-batch and stage), the simulated step time,
// each rank's idle fraction and peak stashes, and the bubble. Exit 1 with the checker's message
// for a schedule that cannot run, 2 for bad flags. docs/pipeline_parallel.md.
#include <cstdio>
#include <string>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/strings/str_join.h"
#include "parallel/pipeline/schedules/schedules.h"
#include "parallel/pipeline/simulate.h"

ABSL_FLAG(std::string, schedule, "1f1b", "gpipe, 1f1b, interleaved, zb-h1 or zb-v");
ABSL_FLAG(int32_t, pp, 4, "pipeline ranks");
ABSL_FLAG(int32_t, micro_batches, 8, "micro-batches per step");
ABSL_FLAG(int32_t, virtual_stages, 2, "interleaved: chunks per rank");
ABSL_FLAG(double, forward, 1.0, "cost of one stage's F for one micro-batch");
ABSL_FLAG(double, backward_input, 1.0, "cost of B (input gradient)");
ABSL_FLAG(double, backward_weight, 1.0, "cost of W (weight gradient)");
ABSL_FLAG(double, transfer, 0.0, "cost of one activation or gradient transfer");
ABSL_FLAG(bool, ops, false, "also print every op with its simulated start time");

int main(int argc, char** argv) {
  absl::SetProgramUsageMessage("Generates, checks and simulates a pipeline schedule.");
  const std::vector<char*> positional = absl::ParseCommandLine(argc, argv);
  if (positional.size() > 1) {
    std::fprintf(stderr, "pipeline_schedule: unexpected argument '%s'\n", positional[1]);
    return 2;
  }
  namespace pl = loom::parallel::pipeline;
  const absl::StatusOr<pl::Schedule> s = pl::MakeSchedule(
      absl::GetFlag(FLAGS_schedule), {.ranks = absl::GetFlag(FLAGS_pp),
                                      .micro_batches = absl::GetFlag(FLAGS_micro_batches),
                                      .virtual_stages = absl::GetFlag(FLAGS_virtual_stages)});
  if (!s.ok()) {
    std::fprintf(stderr, "pipeline_schedule: %s\n", std::string(s.status().message()).c_str());
    return s.status().code() == absl::StatusCode::kInvalidArgument ? 2 : 1;
  }
  const pl::Timeline t = pl::Simulate(*s, {.forward = absl::GetFlag(FLAGS_forward),
                                           .backward_input = absl::GetFlag(FLAGS_backward_input),
                                           .backward_weight = absl::GetFlag(FLAGS_backward_weight),
                                           .transfer = absl::GetFlag(FLAGS_transfer)});
  std::printf("schedule %s: %d ranks x %d chunks, %d micro-batches (checked)\n%s", s->name.c_str(),
              s->placement.ranks, s->placement.chunks, s->micro_batches, s->ToString().c_str());
  if (absl::GetFlag(FLAGS_ops)) std::printf("%s", t.ToString().c_str());
  for (size_t r = 0; r < t.ranks.size(); ++r) {
    std::printf("rank %zu: idle %.1f%%, peak stashes %d\n", r, 100.0 * t.idle_fraction[r],
                t.peak_stashes[r]);
  }
  std::printf("step time %g, bubble %.2f%%\n", t.step_time, 100.0 * t.bubble_fraction);
  return 0;
}
