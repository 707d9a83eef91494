// Data-parallel equivalence checks shared by the thread-backed (local) tests and the mpirun ones:
// a data-parallel run must reproduce the single-rank run with the same seed and global batch.
//
//   RunResult ref = TrainTiny(ReferenceOptions(), nullptr);            // one rank, whole batch
//   RunResult got = TrainTiny(WithLayout(ReferenceOptions(), 2, 1), &dp_group);
//   ExpectEquivalent(ref, got, "dp 2 zero 1");
#pragma once

#include <map>
#include <string>
#include <vector>

#include "comm/communicator.h"
#include "models/trainer.h"

namespace loom::testing {

struct RunResult {
  std::vector<float> losses;                         // per step, mean over ranks
  std::vector<double> grad_norms;                    // per step (before clipping)
  std::map<std::string, std::vector<float>> params;  // final, full (gathered)
};

// The tiny GPT on the embedded task, 20 steps, global batch 8, T 32, AdamW, small buckets so a
// model spans many of them.
models::TrainOptions ReferenceOptions();
models::TrainOptions WithLayout(models::TrainOptions o, int dp, int zero, int64_t grad_accum = 1);

// Trains o.steps steps on `group` (nullptr: one rank) and gathers the final parameters.
RunResult Train(const models::TrainOptions& o, comm::Communicator* group);

// Tolerances (fp32): per-step loss within kLossTolerance (absolute), every final parameter element
// within kParamTolerance (absolute). Reductions in a different order change the last bits of the
// gradients (losses differ by <= 5e-7, parameters by <= 7e-6 after 20 steps, measured).
inline constexpr double kLossTolerance = 5e-6;
inline constexpr double kParamTolerance = 5e-5;
void ExpectEquivalent(const RunResult& reference, const RunResult& got, const std::string& what);

}  // namespace loom::testing
