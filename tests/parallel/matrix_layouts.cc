#include "tests/parallel/matrix_layouts.h"

#include <algorithm>
#include <map>
#include <set>
#include <tuple>

#include "absl/strings/str_cat.h"

namespace loom::testing {

void PrintTo(const MatrixLayout& l, std::ostream* os) { *os << l.Name(); }

std::vector<MatrixLayout> EnumerateMatrix() {
  std::vector<MatrixLayout> all;
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
                        MatrixLayout l{.dp = dp,
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
                        MatrixLayout on_device = l;
                        on_device.device = true;
                        all.push_back(on_device);
                        MatrixLayout recomputed = l;
                        recomputed.recompute = true;
                        all.push_back(recomputed);
                        if (pp == 1) {
                          MatrixLayout accumulated = l;
                          accumulated.grad_accum = 2;
                          all.push_back(accumulated);
                        }
                        if (preset == "tiny") continue;
                        MatrixLayout aux = l;
                        aux.moe = MatrixLayout::Moe::kAuxLoss;
                        all.push_back(aux);
                        const int experts = ep * (fold ? tp : 1);  // the expert group
                        if (experts < 2) continue;
                        for (MatrixLayout::Moe m :
                             {MatrixLayout::Moe::kHierarchical, MatrixLayout::Moe::kDualBatch,
                              MatrixLayout::Moe::kFp8}) {
                          if (m == MatrixLayout::Moe::kDualBatch &&
                              ((pp > 1 && schedule != "dualpipe-v") || zero > 2)) {
                            continue;
                          }
                          MatrixLayout variant = l;
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

std::vector<MatrixLayout> MatrixSlice() {
  std::vector<MatrixLayout> slice;
  std::set<std::tuple<int, int, int, int, std::string>> shapes;
  std::set<std::tuple<std::string, std::string, bool, bool, MatrixLayout::Moe>> modes;
  const std::vector<MatrixLayout> all = EnumerateMatrix();
  for (size_t i = 0; i < all.size(); ++i) {
    const MatrixLayout& l = all[i];
    const bool new_shape = shapes.insert({l.dp, l.tp, l.pp, l.ep, l.preset}).second;
    const bool new_mode = modes
                              .insert({l.pp > 1 ? l.schedule : "", l.precision, l.autocast,
                                       l.recompute || l.device || l.grad_accum > 1, l.moe})
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
