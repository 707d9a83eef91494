// The schedule checker: proves a pipeline schedule complete and deadlock-free before it runs.
//
//   LOOM_RETURN_IF_ERROR(CheckSchedule(schedule));   // InvalidArgument naming rank and instruction
//
// Complete: every (micro-batch, stage) has exactly one F, one B and one W, on the rank the
// placement gives the stage; every rank ends with one optimizer step after its last W.
// Dependencies: F(mb, s) after F(mb, s - 1), B(mb, s) after F(mb, s) and B(mb, s + 1), W(mb, s)
// after B(mb, s); across ranks through a receive that comes before the consumer on its rank, and
// a send after the producer on its.
// Transfers: the executor gives each (sender, receiver, activation | gradient) channel its own
// ordered queue: sends do not wait, a receive waits for the next message of its channel, which
// must be the one it names (a receive of micro-batch 1 where micro-batch 0 comes first is a crossed
// pair, reported as such). The checker runs every rank's list symbolically under those rules; if
// the ranks can get stuck it reports what each stuck rank waits for.
#pragma once

#include "absl/status/status.h"
#include "parallel/pipeline/ir.h"

namespace loom::parallel::pipeline {

absl::Status CheckSchedule(const Schedule& schedule);

}  // namespace loom::parallel::pipeline
