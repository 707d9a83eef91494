// The equivalence matrix's layouts (tests/parallel/equivalence_matrix_test.cc runs them on thread
// ranks, equivalence_matrix_mpi_test.cc under mpirun): every layout loom composes, up to 4 thread
// ranks, trains the tiny GPT (and the tiny MoE) to the single-rank run's losses, gradient norms and
// final parameters within the stated tolerance. The layouts are the cross product of
//   dp × tp × pp × ep (each 1, 2 or 4; 2 to 4 ranks; pp 1 or 2),
//   ZeRO 0-3 (dp > 1), HSDP 2 × 2 (dp 4, ZeRO 1-3), sequence parallelism (tp > 1),
//   the pipeline schedule (1f1b, zb-h1, gpipe; interleaved, zb-v, dualpipe-v on 4 blocks),
//   the preset (dense tiny; tiny-moe, always with ep > 1), experts folded over ep × tp
//   (tiny-moe, tp > 1), the precision (fp32, bf16, bf16 with autocast, fp16),
// the tied embedding's gradient as rows (--sparse_embedding_grad; dense, dp or HSDP, any tp),
// and, for fp32: activation recomputation, the emulated CUDA device, gradient accumulation (2
// micro-batches per data rank, no pipeline), the sequence-level auxiliary loss (tiny-moe), and
// the MoE exchange (tiny-moe with an expert group of 2 or more ranks: the hierarchical dispatch
// over 2 groups; the dual micro-batch overlap below ZeRO-3, without a pipeline or paired by
// dualpipe-v; FP8 dispatch with bf16 combine),
// minus the combinations a preset cannot split (tiny-moe's 170 SwiGLU units over tp 4). Each is
// compared with one rank of the same options accumulating the same micro-batches (each data
// rank's, times the pipeline's, times the dual overlap's halves), within kTpF32Tolerance (fp32),
// kTpBf16Tolerance (16-bit) or kMoeFp8Tolerance (FP8 dispatch): the layouts change only the
// order of f32 sums (16-bit: where values are rounded). docs/equivalence.md.
//
// Suites: `Slice` (CI, ctest `equivalence_matrix_slice`): the first layout of every (dp, tp, pp,
// ep, preset) and of every (schedule, precision, autocast, recompute / device / accumulation,
// exchange), and every 12th of the rest; `Full` (ctest `equivalence_matrix`, label `matrix`,
// left out of scripts/test.sh's default run: `bash scripts/test.sh -L matrix`): all of them.
// Adding a mode means adding its axis to EnumerateMatrix() and to MatrixCoverage.
#pragma once

#include <algorithm>
#include <ostream>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "models/trainer.h"
#include "tests/parallel/dp_checks.h"

namespace loom::testing {

struct MatrixLayout {
  int dp = 1, tp = 1, pp = 1, ep = 1;
  int zero = 0;
  int hsdp_shard = 0;
  bool sequence_parallel = false;
  bool fold = false;
  std::string schedule = "1f1b";
  std::string preset = "tiny";
  std::string precision = "fp32";
  bool autocast = false;
  bool recompute = false;
  bool device = false;            // on the emulated CUDA device (tests/runtime/emulated_device.h)
  int grad_accum = 1;             // micro-batches each data rank accumulates (no pipeline)
  bool sparse_embedding = false;  // --sparse_embedding_grad (dense, dp or HSDP, any tp)
  enum class Moe { kPlain, kHierarchical, kDualBatch, kFp8, kAuxLoss } moe = Moe::kPlain;

  std::string Name() const {
    std::string n = absl::StrCat(preset == "tiny" ? "dense" : "moe", "_dp", dp, "_tp", tp, "_pp",
                                 pp, "_ep", ep, "_zero", zero);
    if (hsdp_shard > 0) absl::StrAppend(&n, "_hsdp", hsdp_shard);
    if (sequence_parallel) absl::StrAppend(&n, "_sp");
    if (fold) absl::StrAppend(&n, "_fold");
    if (pp > 1) {
      std::string name = schedule;
      name.erase(std::remove(name.begin(), name.end(), '-'), name.end());
      absl::StrAppend(&n, "_", name);
    }
    if (recompute) absl::StrAppend(&n, "_recompute");
    if (grad_accum > 1) absl::StrAppend(&n, "_accum", grad_accum);
    if (sparse_embedding) absl::StrAppend(&n, "_sparseemb");
    const char* exchange[] = {"", "_hier", "_dual", "_fp8", "_aux"};
    return absl::StrCat(n, exchange[static_cast<int>(moe)], "_", precision,
                        autocast ? "_autocast" : "", device ? "_device" : "");
  }
  // The schedules that cut the model into more stages than ranks (2 per rank): the model gets 4
  // blocks and a step 4 micro-batches (interleaved: a multiple of pp; the V schedules: 2 x pp).
  bool Deep() const {
    return pp > 1 && (schedule == "interleaved" || schedule == "zb-v" || schedule == "dualpipe-v");
  }
  int PipelineMicroBatches() const { return pp == 1 ? 1 : Deep() ? 4 : 2; }
  // The options every run of this layout and its reference share. 16-bit runs stop at step 10,
  // before the tiny model's loss turns sharply at step 11-12, where 16-bit rounding moves the
  // trajectories apart by more than the layouts' (bf16 gradient norms up to 13 % apart there
  // between one rank accumulating 2 micro-batches and tp 2 x dp 2).
  models::TrainOptions Base() const {
    models::TrainOptions o = ReferenceOptions();
    o.preset = preset;
    o.precision = precision;
    o.autocast = autocast;
    if (precision != "fp32") o.steps = 10;
    if (Deep()) o.num_layers = 4;
    if (moe == Moe::kAuxLoss) o.moe_aux_loss_coef = 0.05f;
    if (moe == Moe::kHierarchical) {  // node-limited groups, both allowed: the same routing
      o.moe_groups = 2;
      o.moe_top_groups = 2;
    }
    return o;
  }
  // Micro-batches a step accumulates (each data rank's, the pipeline's, the dual micro-batch
  // overlap's two halves without a pipeline).
  int MicroBatches() const {
    return dp * ep * grad_accum * PipelineMicroBatches() *
           (moe == Moe::kDualBatch && pp == 1 ? 2 : 1);
  }
  models::TrainOptions Options() const {
    models::TrainOptions o = Base();
    o.dp = dp;
    o.tp = tp;
    o.pp = pp;
    o.ep = ep;
    o.zero = zero;
    o.hsdp_shard = hsdp_shard;
    o.sequence_parallel = sequence_parallel;
    o.moe_fold_tp = fold;
    o.recompute = recompute;
    o.grad_accum = grad_accum;
    o.sparse_embedding_grad = sparse_embedding;
    o.moe_hier_dispatch = moe == Moe::kHierarchical;
    o.moe_dual_batch = moe == Moe::kDualBatch;
    if (moe == Moe::kFp8) {
      o.moe_dispatch = "fp8";
      o.moe_combine = "bf16";
    }
    if (pp > 1) {
      o.schedule = schedule;
      o.micro_batches = PipelineMicroBatches();
    }
    return o;
  }
  // The single-rank run it must reproduce: the same preset and precision, accumulating the same
  // micro-batches (one per data rank, dp × ep, times the pipeline's 2), so bf16 rounds the
  // gradients of the same micro-batches.
  models::TrainOptions ReferenceFor() const {
    models::TrainOptions o = Base();
    o.grad_accum = MicroBatches();
    return o;
  }
};

// gtest prints a layout by its name.
void PrintTo(const MatrixLayout& l, std::ostream* os);

// Every layout of the matrix, and the slice every test run takes.
std::vector<MatrixLayout> EnumerateMatrix();
std::vector<MatrixLayout> MatrixSlice();

// The tolerance a layout must meet against its reference.
Tolerance MatrixTolerance(const MatrixLayout& l);

// One rank's run of `o` (a layout's ReferenceFor()), computed once per process for each set of
// options a reference sets.
const RunResult& MatrixReference(const models::TrainOptions& o);

}  // namespace loom::testing
