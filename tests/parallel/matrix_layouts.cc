#include "tests/parallel/matrix_layouts.h"

#include <algorithm>
#include <map>
#include <set>
#include <tuple>

#include "absl/strings/str_cat.h"

namespace loom::testing {

void PrintTo(const MatrixLayout& l, std::ostream* os) { *os << l.Name(); }

namespace {

// A layout's shape: dp × tp × pp × ep.
struct Shape {
  int dp, tp, pp, ep;
};

// The shapes of 2 to 4 ranks `preset` can take (ep > 1 only with experts; tiny-moe's 170
// SwiGLU units do not split over tp 4), in the matrix's order.
std::vector<Shape> ShapesOf(const std::string& preset) {
  std::vector<Shape> shapes;
  const int sizes[] = {1, 2, 4};
  for (int dp : sizes) {
    for (int tp : sizes) {
      for (int pp : {1, 2}) {
        for (int ep : sizes) {
          const int ranks = dp * tp * pp * ep;
          if (ranks < 2 || ranks > 4) continue;
          if (ep > 1 && preset == "tiny") continue;
          if (preset == "tiny-moe" && tp == 4) continue;
          shapes.push_back({dp, tp, pp, ep});
        }
      }
    }
  }
  return shapes;
}

// The layouts of one shape: ZeRO (dp > 1), HSDP (dp 4, ZeRO >= 1), sequence parallelism and
// folding (tp > 1; folding with experts only), the schedule (pp > 1).
std::vector<MatrixLayout> LayoutsOf(const Shape& m, const std::string& preset,
                                    const std::string& precision) {
  std::vector<MatrixLayout> layouts;
  for (int zero : {0, 1, 2, 3}) {
    if (m.dp == 1 && zero > 0) continue;
    for (int hsdp : {0, 2}) {
      if (hsdp > 0 && (m.dp != 4 || zero == 0)) continue;
      for (bool sp : {false, true}) {
        if (sp && m.tp == 1) continue;
        for (bool fold : {false, true}) {
          if (fold && (m.tp == 1 || preset == "tiny")) continue;
          for (const char* schedule :
               {"1f1b", "zb-h1", "gpipe", "interleaved", "zb-v", "dualpipe-v"}) {
            if (m.pp == 1 && std::string(schedule) != "1f1b") continue;
            layouts.push_back({.dp = m.dp,
                               .tp = m.tp,
                               .pp = m.pp,
                               .ep = m.ep,
                               .zero = zero,
                               .hsdp_shard = hsdp,
                               .sequence_parallel = sp,
                               .fold = fold,
                               .schedule = schedule,
                               .preset = preset,
                               .precision = precision});
          }
        }
      }
    }
  }
  return layouts;
}

// Appends `l` and its variants: bf16 with autocast; the embedding's gradient as rows (dense, dp
// or HSDP, with or without tp); for fp32 the emulated device, recomputation,
// accumulation (no pipeline), and with experts the auxiliary loss and, over an expert group of 2
// or more ranks, the MoE exchanges (the dual micro-batch overlap below ZeRO-3, without a pipeline
// or paired by dualpipe-v).
void AddWithVariants(const MatrixLayout& l, std::vector<MatrixLayout>& all) {
  const auto with = [&](auto change) {
    MatrixLayout v = l;
    change(v);
    all.push_back(v);
  };
  all.push_back(l);
  if (l.precision == "bf16") with([](MatrixLayout& v) { v.autocast = true; });
  if (l.preset == "tiny" && l.dp > 1 && l.pp * l.ep == 1) {
    with([](MatrixLayout& v) { v.sparse_embedding = true; });
  }
  if (l.precision != "fp32") return;
  with([](MatrixLayout& v) { v.device = true; });
  with([](MatrixLayout& v) { v.recompute = true; });
  if (l.pp == 1) with([](MatrixLayout& v) { v.grad_accum = 2; });
  if (l.preset == "tiny") return;
  with([](MatrixLayout& v) { v.moe = MatrixLayout::Moe::kAuxLoss; });
  if (l.ep * (l.fold ? l.tp : 1) < 2) return;  // the expert group
  for (MatrixLayout::Moe m :
       {MatrixLayout::Moe::kHierarchical, MatrixLayout::Moe::kDualBatch, MatrixLayout::Moe::kFp8}) {
    if (m == MatrixLayout::Moe::kDualBatch &&
        ((l.pp > 1 && l.schedule != "dualpipe-v") || l.zero > 2)) {
      continue;
    }
    with([m](MatrixLayout& v) { v.moe = m; });
  }
}

}  // namespace

std::vector<MatrixLayout> EnumerateMatrix() {
  std::vector<MatrixLayout> all;
  for (const std::string precision : {"fp32", "bf16", "fp16"}) {
    for (const std::string preset : {"tiny", "tiny-moe"}) {
      for (const Shape& shape : ShapesOf(preset)) {
        for (const MatrixLayout& l : LayoutsOf(shape, preset, precision)) AddWithVariants(l, all);
      }
    }
  }
  return all;
}

std::vector<MatrixLayout> MatrixSlice() {
  std::vector<MatrixLayout> slice;
  std::set<std::tuple<int, int, int, int, std::string>> shapes;
  std::set<std::tuple<std::string, std::string, bool, bool, MatrixLayout::Moe, bool>> modes;
  const std::vector<MatrixLayout> all = EnumerateMatrix();
  for (size_t i = 0; i < all.size(); ++i) {
    const MatrixLayout& l = all[i];
    const bool new_shape = shapes.insert({l.dp, l.tp, l.pp, l.ep, l.preset}).second;
    const bool new_mode =
        modes
            .insert({l.pp > 1 ? l.schedule : "", l.precision, l.autocast,
                     l.recompute || l.device || l.grad_accum > 1, l.moe, l.sparse_embedding})
            .second;
    if (new_shape || new_mode || i % 12 == 0) slice.push_back(l);
  }
  return slice;
}

Tolerance MatrixTolerance(const MatrixLayout& l) {
  if (l.moe == MatrixLayout::Moe::kFp8) return kMoeFp8Tolerance;
  return l.precision != "fp32" ? kTpBf16Tolerance : kTpF32Tolerance;
}

const RunResult& MatrixReference(const models::TrainOptions& o) {
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

}  // namespace loom::testing
