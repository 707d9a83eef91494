#include <cmath>

#include "runtime/kernels/cpu/cpu_kernels.h"
#include "runtime/kernels/cpu/fast_math.h"
#include "runtime/kernels/cpu/rows.h"
#include "runtime/parallel.h"
#include "runtime/vectorize.h"

namespace loom::runtime::kernels::cpu {
namespace {

// Σ_j exp(l[j] - m) over one row of logits.
LOOM_VECTORIZED float SumExp(const float* l, int64_t v, float m) {
  return LaneSum(v, [l, m](int64_t j) { return FastExp(l[j] - m); });
}

// d[j] += g · exp(l[j] - m) · inv over one row: the softmax part of the gradient.
LOOM_VECTORIZED void AddScaledSoftmax(const float* l, int64_t v, float m, float g_inv, float* d) {
  for (int64_t j = 0; j < v; ++j) d[j] += g_inv * FastExp(l[j] - m);
}

}  // namespace

void CrossEntropyStats(const Tensor& logits, const Tensor& targets, int64_t vocab_start,
                       Tensor& row_max, Tensor& sum_exp, Tensor& target_logit) {
  const auto [rows, v] = AsRows(logits);
  const float* pl = logits.data<float>();
  const int32_t* pt = targets.data<int32_t>();
  float* pmax = row_max.data<float>();
  float* psum = sum_exp.data<float>();
  float* ptl = target_logit.data<float>();
  ParallelFor(rows, RowGrain(v), [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) {
      const float* lr = pl + r * v;
      const float m = v > 0 ? LaneMax(lr, v) : -INFINITY;
      const float s = SumExp(lr, v, m);
      const int64_t local = static_cast<int64_t>(pt[r]) - vocab_start;
      pmax[r] = m;
      psum[r] = s;
      ptl[r] = (local >= 0 && local < v) ? lr[local] : 0.0f;
    }
  });
}

void CrossEntropyRescaleSumExp(const Tensor& local_max, const Tensor& global_max, Tensor& sum_exp) {
  const float* pl = local_max.data<float>();
  const float* pg = global_max.data<float>();
  float* ps = sum_exp.data<float>();
  for (int64_t r = 0; r < sum_exp.numel(); ++r) ps[r] *= std::exp(pl[r] - pg[r]);
}

void CrossEntropyLoss(const Tensor& row_max, const Tensor& sum_exp, const Tensor& target_logit,
                      Tensor& losses) {
  const float* pm = row_max.data<float>();
  const float* ps = sum_exp.data<float>();
  const float* pt = target_logit.data<float>();
  float* po = losses.data<float>();
  for (int64_t r = 0; r < losses.numel(); ++r) po[r] = std::log(ps[r]) + pm[r] - pt[r];
}

void CrossEntropyBackward(const Tensor& logits, const Tensor& targets, int64_t vocab_start,
                          const Tensor& row_max, const Tensor& sum_exp, const Tensor& dloss,
                          Tensor& dlogits) {
  const auto [rows, v] = AsRows(logits);
  const float* pl = logits.data<float>();
  const int32_t* pt = targets.data<int32_t>();
  const float* pm = row_max.data<float>();
  const float* ps = sum_exp.data<float>();
  const float* pdl = dloss.data<float>();
  float* pd = dlogits.data<float>();
  ParallelFor(rows, RowGrain(v), [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) {
      const float* lr = pl + r * v;
      float* dr = pd + r * v;
      const float g = pdl[r];
      AddScaledSoftmax(lr, v, pm[r], g / ps[r], dr);
      const int64_t local = static_cast<int64_t>(pt[r]) - vocab_start;
      if (local >= 0 && local < v) dr[local] -= g;
    }
  });
}

}  // namespace loom::runtime::kernels::cpu
