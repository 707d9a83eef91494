// Pipeline schedules as data: per rank, the ordered list of instructions it runs in one training
// step. Generators (parallel/pipeline/schedules/) produce them, the checker proves one complete
// and deadlock-free before it runs, the simulator computes its timeline from per-op costs, and
// one executor runs any of them.
//
//   LOOM_ASSIGN_OR_RETURN(Schedule s, MakeSchedule("1f1b", {.ranks = 4, .micro_batches = 8}));
//   LOOM_RETURN_IF_ERROR(CheckSchedule(s));
//   Timeline t = Simulate(s, {.forward = 1, .backward_input = 1, .backward_weight = 1});
//
// The model is cut into S = ranks × chunks stages, in order; `Placement` says which rank runs
// stage s as its chunk c (interleaved: stage s on rank s mod p; V-shaped: rank r holds stages r
// and 2p − 1 − r, so the first and last stage share rank 0). For each micro-batch and stage there
// is one F (forward), one B (input gradient) and one W (weight gradient); transfers between ranks
// are explicit: F's output goes to the next stage's rank (kSendActivation / kRecvActivation), B's
// input gradient to the previous stage's (kSendGradient / kRecvGradient). Every rank ends with
// kOptimizerStep.
#pragma once

#include <string>
#include <vector>

namespace loom::parallel::pipeline {

enum class OpKind {
  kForward,
  kBackwardInput,   // B: dX of the stage (needs its F and the next stage's B)
  kBackwardWeight,  // W: dW of the stage (needs its B)
  kSendActivation,  // after F: to the rank of the next stage
  kRecvActivation,  // before F: from the rank of the previous stage
  kSendGradient,    // after B: to the rank of the previous stage
  kRecvGradient,    // before B: from the rank of the next stage
  kOptimizerStep,
};
const char* OpKindName(OpKind kind);  // "F", "B", "W", "send_act", ...
bool IsCompute(OpKind kind);          // F, B, W

struct Instr {
  OpKind kind;
  int micro_batch = -1;  // -1 for the optimizer step
  int stage = -1;        // the stage computed; transfers: the stage whose F or B produced the data
  int peer = -1;         // sends and receives: the other rank
  // F only: paired with the B that comes right after it (DualPipe's overlapped forward and
  // backward of two micro-batches). Both their receives come before the F and both their sends
  // after the B (InsertTransfers), so an executor may run the two together.
  bool paired = false;
  std::string ToString() const;  // "F(mb 3, stage 1)", "send_act(mb 3, stage 1 -> rank 2)"
};

// Which rank runs each stage, and as which of its chunks.
struct Placement {
  enum class Kind { kInterleaved, kV };
  Kind kind = Kind::kInterleaved;
  int ranks = 1;
  int chunks = 1;  // virtual stages per rank (V: 2)

  int stages() const { return ranks * chunks; }
  int rank_of(int stage) const;
  int chunk_of(int stage) const;
  int stage_of(int rank, int chunk) const;
};

struct Schedule {
  std::string name;
  Placement placement;
  int micro_batches = 1;
  std::vector<std::vector<Instr>> ranks;  // ranks[r]: what rank r runs, in order
  // Per rank, one line of its instructions (compute only when `compute_only`).
  std::string ToString(bool compute_only = true) const;
};

// Adds the transfers to a schedule whose ranks hold only compute instructions (and the optimizer
// step): each send right after the F or B that produced its data, each receive right before the
// F or B that needs it; for a paired F and its B, both receives before the F and both sends after
// the B.
void InsertTransfers(Schedule& schedule);

}  // namespace loom::parallel::pipeline
