// Chrome traces of training steps (a pipeline schedule's, or data parallelism's forward and
// backward): every rank's executed ops on one timeline, viewable in Perfetto (ui.perfetto.dev) or
// chrome://tracing.
//
//   LOOM_RETURN_IF_ERROR(WriteChromeTrace(executor.trace(), world, "step.json"));  // collective
//
// One track per rank; F, B and W as boxes named "F3 s1" (micro-batch 3, stage 1), receives as
// boxes that include their wait, sends as instants; each event's args hold its micro-batch,
// stage, stash_bytes and held_bytes (TraceEvent). Data-parallel collectives (from launch to
// completion, overlapping the ops) go on a second track per rank, "rank r dp" (tid = ranks + r):
// gradient reductions "reduce bucket k" (category "dp_reduce") and parameter all-gathers "gather
// bucket k" ("dp_gather"). Times are the steady clock's (one clock for every process of a host),
// shifted so the earliest op of any rank starts at 0.
#pragma once

#include <string>
#include <vector>

#include "absl/status/status.h"
#include "comm/communicator.h"
#include "parallel/pipeline/executor.h"

namespace loom::parallel::pipeline {

// Gathers every rank's events over `world` and writes the trace on its rank 0 (the others write
// nothing). Collective over `world`.
absl::Status WriteChromeTrace(const std::vector<TraceEvent>& mine, comm::Communicator& world,
                              const std::string& path);

// The trace JSON of every rank's events (ranks[r]: rank r's), as WriteChromeTrace writes it.
std::string ChromeTraceJson(const std::vector<std::vector<TraceEvent>>& ranks);

}  // namespace loom::parallel::pipeline
