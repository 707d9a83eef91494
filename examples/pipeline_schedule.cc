// pipeline_schedule: generates a pipeline schedule, checks it and prints its simulated timeline,
// without running a model.
//
//   pipeline_schedule --schedule zb-h1 --pp 4 --micro_batches 8
//   pipeline_schedule --schedule 1f1b --pp 4 --micro_batches 8 --backward_input 2
//       --backward_weight 0
//   pipeline_schedule --schedule interleaved --pp 4 --micro_batches 8 --virtual_stages 2 --ops
//   pipeline_schedule --schedule zb-v --pp 2 --micro_batches 4 --measured step.json
//       --trace_out simulated.json        # then scripts/pipeline_timeline.py draws both
//
// Prints each rank's compute order (F/B/W with micro-batch and stage), the simulated step time,
// each rank's idle fraction and peak stashes, and the bubble. Exit 1 with the checker's message
// for a schedule that cannot run or a file that cannot be read or written, 2 for bad flags.
// docs/pipeline_parallel.md.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <string>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "parallel/pipeline/schedules/schedules.h"
#include "parallel/pipeline/simulate.h"
#include "parallel/pipeline/trace.h"
#include "runtime/io/file.h"

ABSL_FLAG(std::string, schedule, "1f1b", "gpipe, 1f1b, interleaved, zb-h1, zb-v or dualpipe-v");
ABSL_FLAG(int32_t, pp, 4, "pipeline ranks");
ABSL_FLAG(int32_t, micro_batches, 8, "micro-batches per step");
ABSL_FLAG(int32_t, virtual_stages, 2, "interleaved: chunks per rank");
ABSL_FLAG(double, forward, 1.0, "cost of one stage's F for one micro-batch");
ABSL_FLAG(double, backward_input, 1.0, "cost of B (input gradient)");
ABSL_FLAG(double, backward_weight, 1.0, "cost of W (weight gradient)");
ABSL_FLAG(double, transfer, 0.0, "cost of one activation or gradient transfer");
ABSL_FLAG(bool, ops, false, "also print every op with its simulated start time");
ABSL_FLAG(std::string, trace_out, "",
          "write the simulated timeline (with --measured: the one simulated with its costs) as a "
          "Chrome trace JSON like train_gpt --trace's; uniform costs count 1 unit as 1 ms");
ABSL_FLAG(std::string, measured, "",
          "a train_gpt --trace of the same schedule: simulate with its measured per-stage F, B, W "
          "costs and stash bytes, and compare step time, idle fractions and peak stash bytes");

namespace {

namespace pl = loom::parallel::pipeline;

// A measured step (train_gpt --trace): per-stage mean costs and stash bytes, the optimizer step's
// mean cost (gradient reductions, clipping, update), the step time, each
// rank's idle fraction and the most activation bytes its stashes held (TraceEvent::held_bytes).
// Times in microseconds.
struct Measured {
  pl::OpCosts costs;
  double step = 0.0;
  std::vector<double> idle;
  std::vector<double> peak_held;
};

absl::StatusOr<Measured> ReadTrace(const std::string& path, int ranks) {
  std::ifstream in(path);
  if (!in) return absl::NotFoundError("cannot read " + path);
  const nlohmann::json trace = nlohmann::json::parse(in, nullptr, false);
  if (trace.is_discarded() || !trace.contains("traceEvents")) {
    return absl::InvalidArgumentError(path + " is not a Chrome trace from train_gpt --trace");
  }
  std::map<std::pair<pl::OpKind, int>, std::pair<double, int>> sums;
  std::vector<double> busy(ranks, 0.0), end(ranks, 0.0), peak_held(ranks, 0.0);
  // (F or B, stage) -> (least, most) bytes added to a stash, over the micro-batches.
  std::map<std::pair<pl::OpKind, int>, std::pair<double, double>> stash_bytes;
  double transfer = -1.0, optimizer = 0.0;
  const std::map<std::string, pl::OpKind> kinds = {{"F", pl::OpKind::kForward},
                                                   {"B", pl::OpKind::kBackwardInput},
                                                   {"W", pl::OpKind::kBackwardWeight}};
  for (const auto& e : trace["traceEvents"]) {
    if (e.value("ph", "") != "X" || e.value("cat", "") == "dp_reduce") continue;
    const int rank = e.value("tid", -1);
    if (rank < 0 || rank >= ranks) {
      return absl::InvalidArgumentError(absl::StrCat(
          path, ": an op of rank ", rank, ", beyond --pp ", ranks,
          "; --measured reads the trace of a pipeline-only run (train_gpt --pp without --dp or "
          "--tp) of the same schedule"));
    }
    const double ts = e.value("ts", 0.0), dur = e.value("dur", 0.0);
    end[rank] = std::max(end[rank], ts + dur);
    const std::string cat = e.value("cat", "");
    const nlohmann::json& args = e["args"];
    peak_held[rank] = std::max(peak_held[rank], args.value("held_bytes", 0.0));
    if (const auto k = kinds.find(cat); k != kinds.end()) {
      const int stage = args.value("stage", -1);
      auto& [sum, n] = sums[{k->second, stage}];
      sum += dur, ++n;
      busy[rank] += dur;
      const double bytes = args.value("stash_bytes", 0.0);
      const auto [it, added] =
          stash_bytes.emplace(std::pair{k->second, stage}, std::pair{bytes, bytes});
      it->second = {std::min(it->second.first, bytes), std::max(it->second.second, bytes)};
    } else if (cat == pl::OpKindName(pl::OpKind::kOptimizerStep)) {  // the mean over the ranks
      optimizer += dur / ranks;
      busy[rank] += dur;
    } else if (cat.rfind("recv", 0) == 0) {  // the quickest receive: a transfer without a wait
      transfer = transfer < 0 ? dur : std::min(transfer, dur);
    }
  }
  Measured m;
  for (const auto& [key, sum_n] : sums) m.costs.by_stage[key] = sum_n.first / sum_n.second;
  for (const auto& [op, range] : stash_bytes) {
    if (range.first != range.second) {  // the simulator takes one size per op and stage
      return absl::InvalidArgumentError(
          absl::StrCat(path, ": ", pl::OpKindName(op.first), " of stage ", op.second,
                       " adds different bytes to its micro-batches' stashes (", range.first, " to ",
                       range.second, ")"));
    }
    m.costs.stash_bytes[op] = range.first;
  }
  m.costs.transfer = std::max(0.0, transfer);
  m.costs.optimizer = optimizer;
  m.peak_held = peak_held;
  m.step = *std::max_element(end.begin(), end.end());
  for (int r = 0; r < ranks; ++r) m.idle.push_back(m.step > 0 ? 1.0 - busy[r] / m.step : 0.0);
  return m;
}

}  // namespace

// Writes `t` as a Chrome trace, `unit_us` microseconds per unit of its costs; false on failure
// (after saying why).
bool WriteSimulatedTrace(const pl::Timeline& t, double unit_us, const std::string& path) {
  std::vector<std::vector<pl::TraceEvent>> ranks(t.ranks.size());
  for (size_t r = 0; r < t.ranks.size(); ++r) {
    for (const pl::TimedInstr& op : t.ranks[r]) {
      ranks[r].push_back({.instr = op.instr,
                          .start_us = std::llround(op.start * unit_us),
                          .end_us = std::llround(op.end * unit_us)});
    }
  }
  const absl::Status s = loom::runtime::io::WriteFileAtomic(path, pl::ChromeTraceJson(ranks));
  if (!s.ok()) std::fprintf(stderr, "pipeline_schedule: %s\n", std::string(s.message()).c_str());
  return s.ok();
}

int main(int argc, char** argv) {
  absl::SetProgramUsageMessage("Generates, checks and simulates a pipeline schedule.");
  const std::vector<char*> positional = absl::ParseCommandLine(argc, argv);
  if (positional.size() > 1) {
    std::fprintf(stderr, "pipeline_schedule: unexpected argument '%s'\n", positional[1]);
    return 2;
  }
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
  const std::string measured = absl::GetFlag(FLAGS_measured);
  const std::string trace_out = absl::GetFlag(FLAGS_trace_out);
  if (measured.empty())
    return trace_out.empty() || WriteSimulatedTrace(t, 1000.0, trace_out) ? 0 : 1;
  const absl::StatusOr<Measured> m = ReadTrace(measured, s->placement.ranks);
  if (!m.ok()) {
    std::fprintf(stderr, "pipeline_schedule: %s\n", std::string(m.status().message()).c_str());
    return 1;
  }
  const pl::Timeline sim = pl::Simulate(*s, m->costs);
  std::printf("\nmeasured (%s) vs simulated with its per-stage costs (transfer %.0f us):\n",
              measured.c_str(), m->costs.transfer);
  std::printf("  step time: measured %.1f ms, simulated %.1f ms (%+.1f%%)\n", m->step / 1000,
              sim.step_time / 1000, 100.0 * (sim.step_time / m->step - 1.0));
  for (size_t r = 0; r < sim.ranks.size(); ++r) {
    std::printf("  rank %zu idle: measured %.1f%%, simulated %.1f%%\n", r, 100.0 * m->idle[r],
                100.0 * sim.idle_fraction[r]);
  }
  for (size_t r = 0; r < sim.ranks.size(); ++r) {
    std::printf("  rank %zu peak stash bytes: measured %.0f, simulated %.0f\n", r, m->peak_held[r],
                sim.peak_stash_bytes[r]);
  }
  return trace_out.empty() || WriteSimulatedTrace(sim, 1.0, trace_out) ? 0 : 1;
}
