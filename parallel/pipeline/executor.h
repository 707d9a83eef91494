// The pipeline executor: runs any checked schedule's list for this rank, one training step.
//
//   GptStages stages(...);                       // a StageRunner: the model's stages on this rank
//   Executor exec(schedule, pp_rank, *channels, stages);
//   LOOM_RETURN_IF_ERROR(exec.RunStep());        // F, B, W, sends and receives; not the optimizer
//
// Activations and input gradients move between ranks over the channels (parallel/pipeline/
// channels.h): a send is asynchronous (its buffer is kept until it completes: checked before each
// op, waited for at the end of the step), a receive waits for its message right where the
// schedule puts it. Each (micro-batch, stage) gets its own stash, freed as soon as its W is done.
// A paired F and B (DualPipe's) may run together on two lanes (ExecutorOptions::overlap_pairs).
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "parallel/lanes.h"
#include "parallel/pipeline/channels.h"
#include "parallel/pipeline/ir.h"
#include "parallel/stash.h"
#include "runtime/base/clock.h"

namespace loom::parallel::pipeline {

// The model side of a pipeline rank: the stages it holds.
class StageRunner {
 public:
  virtual ~StageRunner() = default;
  // An empty stash for one (micro-batch, stage) with the run's settings.
  virtual Stash NewStash() const = 0;
  // F: `input` is the previous stage's activation (undefined for stage 0, which reads the
  // micro-batch's tokens). Returns the activation for the next stage (undefined for the last
  // stage, which computes its loss).
  virtual runtime::Tensor Forward(Stash& stash, int micro_batch, int stage,
                                  const runtime::Tensor& input) = 0;
  // B: `dy` is the next stage's input gradient (undefined for the last stage, which starts from
  // its loss). Returns the input gradient for the previous stage (undefined for stage 0).
  virtual runtime::Tensor BackwardInput(Stash& stash, int micro_batch, int stage,
                                        const runtime::Tensor& dy) = 0;
  virtual void BackwardWeight(Stash& stash, int micro_batch, int stage) = 0;
  // The shape of the activation (and gradient) between stages, for receive buffers.
  virtual runtime::Shape BoundaryShape() const = 0;
};

// One op as it ran: its instruction, its start and end (microseconds of the steady clock, which
// is one clock for every process of a host), and activation memory.
struct TraceEvent {
  Instr instr;
  int64_t start_us = 0;
  int64_t end_us = 0;
  // >= 0: not an instruction of the schedule but a data-parallel collective of this bucket
  // (DataParallel::comm_spans; `instr` unused), from its launch to its completion: its gradient
  // reduction, or with `dp_gather` its parameters' all-gather.
  int dp_bucket = -1;
  bool dp_gather = false;
  // What the op added to its stash (Stash::activation_bytes()): F the activations its backward
  // reads, B what W still needs (the output gradients), minus what it erased; 0 for other ops.
  // W frees the whole stash.
  int64_t stash_bytes = 0;
  // After the op: the activation bytes in use (the allocator's accounting, MemoryTag::kActivation)
  // beyond those at the start of the step, less the boundary buffers the executor holds (data to
  // send, sends in flight, data received and not yet used) — what the stashes hold, measured.
  int64_t held_bytes = 0;
};

struct ExecutorOptions {
  // Run each paired F and B (Instr::paired, DualPipe's) together on two lanes
  // (parallel/lanes.h), handing over at the MoE exchanges; false: one after the other. The
  // same arithmetic either way (an F and a B of other micro-batches share no gradients).
  bool overlap_pairs = false;
};

class Executor {
 public:
  // `schedule` must pass CheckSchedule; all must outlive the executor.
  Executor(const Schedule& schedule, int rank, Channels& channels, StageRunner& runner,
           ExecutorOptions options = {})
      : schedule_(schedule), rank_(rank), channels_(channels), runner_(runner), options_(options) {}

  // Runs this rank's instructions up to the optimizer step (which the caller takes). A failed
  // transfer is returned (the communicator names the op and the missing rank).
  absl::Status RunStep();
  // What the last RunStep ran, in order (receives include their wait).
  const std::vector<TraceEvent>& trace() const { return trace_; }

 private:
  using Key = std::pair<int, int>;  // (micro-batch, stage)

  const Schedule& schedule_;
  int rank_;
  Channels& channels_;
  StageRunner& runner_;
  ExecutorOptions options_;
  Lanes lanes_;  // overlap_pairs: the pair's F and B
  std::vector<TraceEvent> trace_;
};

}  // namespace loom::parallel::pipeline
