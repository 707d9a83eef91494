// Data-parallel equivalence checks shared by the thread-backed (local) tests and the mpirun ones:
// a data-parallel run must reproduce the single-rank run with the same seed and global batch.
//
//   RunResult ref = TrainTiny(ReferenceOptions(), nullptr);            // one rank, whole batch
//   RunResult got = TrainTiny(WithLayout(ReferenceOptions(), 2, 1), &dp_group);
//   ExpectEquivalent(ref, got, "dp 2 zero 1");
#pragma once

#include <gtest/gtest.h>

#include <map>
#include <string>
#include <thread>
#include <vector>

#include "comm/communicator.h"
#include "comm/local/local_backend.h"
#include "models/trainer.h"
#include "parallel/context.h"
#include "parallel/mesh.h"

namespace loom::testing {

struct RunResult {
  std::vector<float> losses;                         // per step, mean over ranks
  std::vector<double> grad_norms;                    // per step (before clipping)
  std::vector<float> loss_scales;                    // per Step() call
  std::vector<bool> skipped;                         // per Step() call (fp16 overflow)
  std::map<std::string, std::vector<float>> params;  // final, full (gathered; pipeline: this
                                                     // rank's stages' only)
};

// Runs body(rank, communicator) on `size` threads over a local world (comm/local).
template <typename F>
void OnRanks(int size, F body) {
  auto world = comm::MakeLocalWorld(size);
  std::vector<std::thread> threads;
  for (int r = 0; r < size; ++r) threads.emplace_back([&, r] { body(r, *world[r]); });
  for (auto& t : threads) t.join();
}

// Runs body(rank, context) on dp × tp × pp × ep threads (o's sizes) over a mesh of that shape,
// order tp-ep-dp-pp.
template <typename F>
void OnMesh(const models::TrainOptions& o, F body) {
  OnRanks(o.dp * o.tp * o.pp * o.ep, [&](int rank, comm::Communicator& world) {
    auto mesh = parallel::Mesh::Create(
        world, parallel::MeshShape{.dp = o.dp, .tp = o.tp, .pp = o.pp, .ep = o.ep});
    ASSERT_TRUE(mesh.ok()) << mesh.status();
    body(rank, parallel::ParallelContext::FromMesh(**mesh));
  });
}

// The tiny GPT on the embedded task, 20 steps, global batch 8, T 32, AdamW, small buckets so a
// model spans many of them.
models::TrainOptions ReferenceOptions();
models::TrainOptions WithLayout(models::TrainOptions o, int dp, int zero, int64_t grad_accum = 1);

// Trains until o.steps optimizer steps are done on `group` (nullptr: one rank) and gathers the
// final parameters. losses and grad_norms hold applied steps only.
RunResult Train(const models::TrainOptions& o, comm::Communicator* group);
// The same on a mesh's groups (tensor parallelism: context.tp); params are gathered whole.
RunResult Train(const models::TrainOptions& o, const parallel::ParallelContext& context);

// How close a layout must come to the reference: per-step loss (absolute), grad norm (relative)
// and every final parameter element (absolute).
struct Tolerance {
  double loss;
  double grad_norm;
  double param;
};
// fp32: reductions in a different order change the last bits of the gradients (measured: losses
// differ by <= 5e-7, parameters by <= 7e-6 after 20 steps).
inline constexpr Tolerance kF32Tolerance = {.loss = 5e-6, .grad_norm = 1e-4, .param = 5e-5};
// bf16 working values and 16-bit stashed activations, against a single rank with the same
// micro-batch shape: last-bit differences of the reductions flip the bf16 rounding of some
// values, and AdamW turns tiny gradient differences into full-size updates of some elements
// (measured over 20 steps at dp 2, ZeRO 0-3: losses <= 1.7e-4, grad norms <= 0.03 % and
// parameters <= 5.2e-3 apart).
inline constexpr Tolerance kBf16Tolerance = {.loss = 1e-3, .grad_norm = 2e-3, .param = 2e-2};
// Tensor parallelism splits every GEMM's reduction (row-parallel partial sums, the tied head's
// dx) and the loss's statistics, so rounding differs from step 1 (losses within 4e-6 there) and
// grows where training is sensitive (measured over 20 steps of the tiny model at tp 2 and 4, with
// and without dp 2 × ZeRO 1/3: losses <= 5.7e-6, grad norms <= 0.021 %, parameters <= 2.8e-5;
// train_gpt at tp 2 × dp 2 under mpirun against one rank on 2 threads: losses <= 2.8e-5; bf16 at
// tp 2: losses <= 9.1e-4, grad norms <= 1.5 %, parameters <= 4.3e-3).
inline constexpr Tolerance kTpF32Tolerance = {.loss = 5e-5, .grad_norm = 1e-3, .param = 1e-4};
inline constexpr Tolerance kTpBf16Tolerance = {.loss = 3e-3, .grad_norm = 3e-2, .param = 2e-2};
// MoE FP8 (or bf16) dispatch + bf16 combine against the f32 single rank, measured over 20 steps
// of the tiny MoE at ep 2: fp8 / bf16 losses <= 2.8e-3, grad norms <= 10.9 % (one step; rounding
// moves a few tokens' choices), parameters <= 3.3e-2 (AdamW turns small gradient differences into
// full-size updates of some elements); bf16 / bf16 3.0e-3, 3.1 %, 2.7e-2.
inline constexpr Tolerance kMoeFp8Tolerance = {.loss = 1e-2, .grad_norm = 0.2, .param = 6e-2};
void ExpectEquivalent(const RunResult& reference, const RunResult& got, const std::string& what,
                      const Tolerance& tolerance = kF32Tolerance);
// Trains `o` on its mesh (OnMesh) and returns every rank's result.
std::vector<RunResult> TrainOnMesh(const models::TrainOptions& o);
// Trains `steps` steps of `o` on its mesh (o.steps sets the schedule) and checkpoints to
// o.save_dir.
void TrainAndSaveOnMesh(const models::TrainOptions& o, int64_t steps);
// One rank's losses and norms as the reference's, and each parameter it holds (a pipeline rank:
// its stages') as the reference's.
void ExpectEquivalentWhereHeld(const RunResult& reference, const RunResult& got,
                               const std::string& what, const Tolerance& tolerance = kF32Tolerance);
// Every rank's losses and norms as the reference's; each parameter, on whichever ranks hold it
// (a pipeline rank: its stages'), as the reference's; together the ranks hold all of them.
void ExpectEquivalentOnRanks(const RunResult& reference, const std::vector<RunResult>& ranks,
                             const std::string& what, const Tolerance& tolerance = kF32Tolerance);

}  // namespace loom::testing
