// The pipeline simulator: a schedule's timeline from per-op costs, without running the model.
//
//   Timeline t = Simulate(schedule, {.forward = 1.0, .backward_input = 1.0, .backward_weight
//   = 1.0}); t.step_time, t.bubble_fraction, t.peak_stashes[r] ...
//
// Each rank runs its list in order; a compute op starts when the rank is free and its inputs are
// there, a receive completes `transfer` after the matching send (sends cost the sender nothing:
// they are asynchronous), the optimizer step takes `optimizer`. The bubble is the ranks' idle time
// over ranks × step time. A stash (one micro-batch's activations of one stage) lives from its F
// until its W is done; peak_stashes[r] is the most rank r holds at once, in stage-activation units
// (times the bytes of one stage's activations for one micro-batch, when stages are alike), and
// peak_stash_bytes[r] the most bytes, from what each F and B adds (OpCosts::stash_bytes). The
// schedule must pass CheckSchedule.
#pragma once

#include <map>
#include <string>
#include <utility>
#include <vector>

#include "parallel/pipeline/ir.h"

namespace loom::parallel::pipeline {

struct OpCosts {
  double forward = 1.0;
  double backward_input = 1.0;
  double backward_weight = 1.0;
  double transfer = 0.0;  // per activation or gradient message
  double optimizer = 0.0;
  // Per-stage costs where stages differ (the first holds the embeddings, the last the head and
  // the loss), e.g. measured: (F, B or W, stage) -> cost; the uniform figures above elsewhere.
  std::map<std::pair<OpKind, int>, double> by_stage = {};
  // Bytes a micro-batch's F (or B) of a stage adds to its stash, all freed by its W, e.g.
  // measured (the executor's TraceEvent::stash_bytes): (F or B, stage) -> bytes; none where not
  // listed. Only peak_stash_bytes reads it.
  std::map<std::pair<OpKind, int>, double> stash_bytes = {};
};

struct TimedInstr {
  Instr instr;
  double start = 0.0;
  double end = 0.0;
};

struct Timeline {
  std::vector<std::vector<TimedInstr>> ranks;
  double step_time = 0.0;
  std::vector<double> busy;              // per rank: time computing (F, B, W, optimizer)
  std::vector<double> idle_fraction;     // per rank: 1 - busy / step_time
  double bubble_fraction = 0.0;          // Σ idle / (ranks × step_time)
  std::vector<int> peak_stashes;         // per rank
  std::vector<double> peak_stash_bytes;  // per rank: the most bytes its stashes hold at once
  // Per rank, one line per op "F0.1 [3.0, 4.0)"-style, for the tool and the docs.
  std::string ToString() const;
};

Timeline Simulate(const Schedule& schedule, const OpCosts& costs);

}  // namespace loom::parallel::pipeline
