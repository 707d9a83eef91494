// The equivalence matrix: every layout loom composes, up to 4 thread ranks, trains the tiny GPT
// (and the tiny MoE) to the single-rank run's losses, gradient norms and final parameters within
// the stated tolerance. The layouts are the cross product of
//   dp × tp × pp × ep (each 1, 2 or 4; 2 to 4 ranks; pp 1 or 2),
//   ZeRO 0-3 (dp > 1), HSDP 2 × 2 (dp 4, ZeRO 1-3), sequence parallelism (tp > 1),
//   the pipeline schedule (1f1b, zb-h1, gpipe; interleaved, zb-v, dualpipe-v on 4 blocks),
//   the preset (dense tiny; tiny-moe, always with ep > 1), experts folded over ep × tp
//   (tiny-moe, tp > 1), the precision (fp32, bf16, bf16 with autocast, fp16),
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
// Adding a mode means adding its axis to Enumerate() and to MatrixCoverage.
#include <gtest/gtest.h>

#include <algorithm>
#include <map>
#include <optional>
#include <ostream>
#include <set>
#include <string>
#include <tuple>
#include <vector>

#include "absl/strings/str_cat.h"
#include "models/trainer.h"
#include "runtime/parallel.h"
#include "tests/parallel/dp_checks.h"
#include "tests/runtime/emulated_device.h"

namespace loom::testing {
namespace {

struct Layout {
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
  bool device = false;  // on the emulated CUDA device (tests/runtime/emulated_device.h)
  int grad_accum = 1;   // micro-batches each data rank accumulates (no pipeline)
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
    if (moe == Moe::kHierarchical) {
      o.moe_groups = 2;
      o.moe_top_groups = 2;
      o.moe_hier_dispatch = true;
    }
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
    if (moe == Moe::kHierarchical) {  // the same routing: 2 groups, both allowed
      o.moe_groups = 2;
      o.moe_top_groups = 2;
    }
    return o;
  }
};

// gtest prints a failing layout by its name.
void PrintTo(const Layout& l, std::ostream* os) { *os << l.Name(); }

std::vector<Layout> Enumerate() {
  std::vector<Layout> all;
  const int sizes[] = {1, 2, 4};
  for (const std::string precision : {"fp32", "bf16", "fp16"}) {
    for (const std::string preset : {"tiny", "tiny-moe"}) {
      for (int dp : sizes) {
        for (int tp : sizes) {
          for (int pp : {1, 2}) {
            for (int ep : sizes) {
              const int ranks = dp * tp * pp * ep;
              if (ranks < 2 || ranks > 4) continue;
              if (ep > 1 && preset == "tiny") continue;
              if (preset == "tiny-moe" && tp == 4) continue;  // 170 SwiGLU units
              for (int zero : {0, 1, 2, 3}) {
                if (dp == 1 && zero > 0) continue;
                for (int hsdp : {0, 2}) {
                  if (hsdp > 0 && (dp != 4 || zero == 0)) continue;
                  for (bool sp : {false, true}) {
                    if (sp && tp == 1) continue;
                    for (bool fold : {false, true}) {
                      if (fold && (tp == 1 || preset == "tiny")) continue;
                      for (const std::string schedule :
                           {"1f1b", "zb-h1", "gpipe", "interleaved", "zb-v", "dualpipe-v"}) {
                        if (pp == 1 && schedule != "1f1b") continue;
                        Layout l{.dp = dp,
                                 .tp = tp,
                                 .pp = pp,
                                 .ep = ep,
                                 .zero = zero,
                                 .hsdp_shard = hsdp,
                                 .sequence_parallel = sp,
                                 .fold = fold,
                                 .schedule = schedule,
                                 .preset = preset,
                                 .precision = precision};
                        all.push_back(l);
                        if (precision == "bf16") {
                          l.autocast = true;
                          all.push_back(l);
                        }
                        if (precision != "fp32") continue;
                        Layout on_device = l;
                        on_device.device = true;
                        all.push_back(on_device);
                        Layout recomputed = l;
                        recomputed.recompute = true;
                        all.push_back(recomputed);
                        if (pp == 1) {
                          Layout accumulated = l;
                          accumulated.grad_accum = 2;
                          all.push_back(accumulated);
                        }
                        if (preset == "tiny") continue;
                        Layout aux = l;
                        aux.moe = Layout::Moe::kAuxLoss;
                        all.push_back(aux);
                        const int experts = ep * (fold ? tp : 1);  // the expert group
                        if (experts < 2) continue;
                        for (Layout::Moe m : {Layout::Moe::kHierarchical, Layout::Moe::kDualBatch,
                                              Layout::Moe::kFp8}) {
                          if (m == Layout::Moe::kDualBatch &&
                              ((pp > 1 && schedule != "dualpipe-v") || zero > 2)) {
                            continue;
                          }
                          Layout variant = l;
                          variant.moe = m;
                          all.push_back(variant);
                        }
                      }
                    }
                  }
                }
              }
            }
          }
        }
      }
    }
  }
  return all;
}

std::vector<Layout> Slice() {
  std::vector<Layout> slice;
  std::set<std::tuple<int, int, int, int, std::string>> shapes;
  std::set<std::tuple<std::string, std::string, bool, bool, Layout::Moe>> modes;
  const std::vector<Layout> all = Enumerate();
  for (size_t i = 0; i < all.size(); ++i) {
    const Layout& l = all[i];
    const bool new_shape = shapes.insert({l.dp, l.tp, l.pp, l.ep, l.preset}).second;
    const bool new_mode = modes
                              .insert({l.pp > 1 ? l.schedule : "", l.precision, l.autocast,
                                       l.recompute || l.device || l.grad_accum > 1, l.moe})
                              .second;
    if (new_shape || new_mode || i % 12 == 0) slice.push_back(l);
  }
  return slice;
}

class Matrix : public ::testing::TestWithParam<Layout> {
 protected:
  static void SetUpTestSuite() { runtime::SetNumThreads(1); }
  // One rank's run of `o`, computed once per (preset, precision, accumulation).
  static const RunResult& Reference(const models::TrainOptions& o) {
    static std::map<std::string, RunResult>* cache = new std::map<std::string, RunResult>();
    // Every option a reference sets (Layout::Base and ReferenceFor).
    const std::string key =
        absl::StrCat(o.preset, "/", o.precision, o.autocast ? "+autocast" : "", "/accum ",
                     o.grad_accum, "/steps ", o.steps, "/layers ", o.num_layers, "/aux ",
                     o.moe_aux_loss_coef, "/groups ", o.moe_groups, ":", o.moe_top_groups);
    auto it = cache->find(key);
    if (it == cache->end()) it = cache->emplace(key, Train(o, nullptr)).first;
    return it->second;
  }
};

TEST_P(Matrix, EqualsTheSingleRankRun) {
  const Layout& l = GetParam();
  models::TrainOptions o = l.Options();
  std::optional<runtime::testing::EmulatedDevice> device;
  if (l.device) o.device = &device.emplace().allocator();
  const absl::Status valid = models::ValidateTrainOptions(o);
  ASSERT_TRUE(valid.ok()) << l.Name() << ": " << valid;
  const Tolerance tolerance = l.moe == Layout::Moe::kFp8 ? kMoeFp8Tolerance
                              : l.precision != "fp32"    ? kTpBf16Tolerance
                                                         : kTpF32Tolerance;
  ExpectEquivalentOnRanks(Reference(l.ReferenceFor()), TrainOnMesh(o), l.Name(), tolerance);
}

// The matrix covers what it says: every axis takes every value somewhere.
TEST(MatrixCoverage, EveryAxisValueAppears) {
  const std::vector<Layout> all = Enumerate();
  std::set<std::string> seen;
  for (const Layout& l : all) {
    seen.insert(absl::StrCat("dp", l.dp));
    seen.insert(absl::StrCat("tp", l.tp));
    seen.insert(absl::StrCat("pp", l.pp));
    seen.insert(absl::StrCat("ep", l.ep));
    seen.insert(absl::StrCat("zero", l.zero));
    if (l.hsdp_shard > 0) seen.insert("hsdp");
    if (l.sequence_parallel) seen.insert("sp");
    if (l.fold) seen.insert("fold");
    if (l.recompute) seen.insert("recompute");
    if (l.autocast) seen.insert("autocast");
    if (l.device) seen.insert("device");
    if (l.grad_accum > 1) seen.insert("accum");
    seen.insert(absl::StrCat("moe", static_cast<int>(l.moe)));
    seen.insert(l.schedule);
    seen.insert(l.preset);
    seen.insert(l.precision);
  }
  for (const char* v : {"dp4",        "tp4",      "pp2",   "ep4",   "zero3",       "hsdp",
                        "sp",         "fold",     "zb-h1", "gpipe", "interleaved", "zb-v",
                        "dualpipe-v", "tiny-moe", "bf16",  "fp16",  "autocast",    "recompute",
                        "device",     "accum",    "moe1",  "moe2",  "moe3",        "moe4"}) {
    EXPECT_TRUE(seen.count(v)) << v;
  }
  EXPECT_LT(Slice().size(), all.size());
}

std::string LayoutName(const ::testing::TestParamInfo<Layout>& info) { return info.param.Name(); }

INSTANTIATE_TEST_SUITE_P(Slice, Matrix, ::testing::ValuesIn(Slice()), LayoutName);
INSTANTIATE_TEST_SUITE_P(Full, Matrix, ::testing::ValuesIn(Enumerate()), LayoutName);

}  // namespace
}  // namespace loom::testing
