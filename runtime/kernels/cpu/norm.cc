#include <cmath>
#include <tuple>
#include <utility>

#include "runtime/kernels/cpu/cpu_kernels.h"
#include "runtime/kernels/cpu/fast_math.h"
#include "runtime/kernels/cpu/rows.h"
#include "runtime/parallel.h"
#include "runtime/vectorize.h"

namespace loom::runtime::kernels::cpu {
namespace {

// One row of LayerNorm: out = (x - mean) · rstd · w + b; returns {mean, rstd}.
LOOM_VECTORIZED std::pair<float, float> LayerNormRow(const float* x, const float* w, const float* b,
                                                     int64_t c, float eps, float* out) {
  // Two passes (mean, then centred variance) avoid the cancellation of E[x²] - E[x]².
  const float m = LaneSum(c, [x](int64_t j) { return x[j]; }) / static_cast<float>(c);
  const float var = LaneSum(c, [x, m](int64_t j) { return (x[j] - m) * (x[j] - m); });
  const float s = 1.0f / std::sqrt(var / static_cast<float>(c) + eps);
  for (int64_t j = 0; j < c; ++j) out[j] = (x[j] - m) * s * w[j] + b[j];
  return {m, s};
}

// dx += (dout·w - mean(dout·w) - n · mean(dout·w·n)) · rstd with n = (x - mean) · rstd.
LOOM_VECTORIZED void LayerNormBackwardRow(const float* dout, const float* x, const float* w,
                                          float m, float s, int64_t c, float* dx) {
  const float dnorm_mean =
      LaneSum(c, [dout, w](int64_t j) { return dout[j] * w[j]; }) / static_cast<float>(c);
  const float dnorm_norm_mean =
      LaneSum(c, [dout, w, x, m, s](int64_t j) { return dout[j] * w[j] * ((x[j] - m) * s); }) /
      static_cast<float>(c);
  for (int64_t j = 0; j < c; ++j) {
    const float norm = (x[j] - m) * s;
    dx[j] += (dout[j] * w[j] - dnorm_mean - norm * dnorm_norm_mean) * s;
  }
}

// dw[j] += Σ_r dout[r, j] · n[r, j] and db[j] += Σ_r dout[r, j] for the columns [begin, end), rows
// in order (db may be null: RMSNorm, where n = x · rstd and mean is 0).
LOOM_VECTORIZED void NormWeightGradColumns(const float* dout, const float* x, const float* mean,
                                           const float* rstd, int64_t rows, int64_t c,
                                           int64_t begin, int64_t end, float* dw, float* db) {
  for (int64_t r = 0; r < rows; ++r) {
    const float* xr = x + r * c;
    const float* dr = dout + r * c;
    const float m = mean == nullptr ? 0.0f : mean[r];
    const float s = rstd[r];
    for (int64_t j = begin; j < end; ++j) dw[j] += dr[j] * ((xr[j] - m) * s);
    if (db != nullptr) {
      for (int64_t j = begin; j < end; ++j) db[j] += dr[j];
    }
  }
}

LOOM_VECTORIZED float RMSNormRow(const float* x, const float* w, int64_t c, float eps, float* out) {
  const float ss = LaneSum(c, [x](int64_t j) { return x[j] * x[j]; });
  const float s = 1.0f / std::sqrt(ss / static_cast<float>(c) + eps);
  for (int64_t j = 0; j < c; ++j) out[j] = x[j] * s * w[j];
  return s;
}

// With n = x·s: dx += s · (dn - n · mean(dn · n)), dn = dout · w.
LOOM_VECTORIZED void RMSNormBackwardRow(const float* dout, const float* x, const float* w, float s,
                                        int64_t c, float* dx) {
  const float dnorm_norm_mean =
      LaneSum(c, [dout, w, x, s](int64_t j) { return dout[j] * w[j] * (x[j] * s); }) /
      static_cast<float>(c);
  for (int64_t j = 0; j < c; ++j) dx[j] += (dout[j] * w[j] - x[j] * s * dnorm_norm_mean) * s;
}

}  // namespace

void LayerNormForward(const Tensor& x, const Tensor& w, const Tensor& b, float eps, Tensor& out,
                      Tensor& mean, Tensor& rstd) {
  const auto [rows, c] = AsRows(x);
  const float* px = x.data<float>();
  const float* pw = w.data<float>();
  const float* pb = b.data<float>();
  float* po = out.data<float>();
  float* pmean = mean.data<float>();
  float* prstd = rstd.data<float>();
  ParallelFor(rows, RowGrain(c), [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) {
      std::tie(pmean[r], prstd[r]) = LayerNormRow(px + r * c, pw, pb, c, eps, po + r * c);
    }
  });
}

void LayerNormBackward(const Tensor& dout, const Tensor& x, const Tensor& w, const Tensor& mean,
                       const Tensor& rstd, Tensor& dx, Tensor& dw, Tensor& db) {
  const auto [rows, c] = AsRows(x);
  const float* pdo = dout.data<float>();
  const float* px = x.data<float>();
  const float* pw = w.data<float>();
  const float* pmean = mean.data<float>();
  const float* prstd = rstd.data<float>();
  float* pdx = dx.data<float>();
  // dx: rows are independent.
  ParallelFor(rows, RowGrain(c), [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) {
      LayerNormBackwardRow(pdo + r * c, px + r * c, pw, pmean[r], prstd[r], c, pdx + r * c);
    }
  });
  // dw, db: sums over rows, split by columns so each column is summed in row order.
  ParallelFor(c, 64, [&](int64_t begin, int64_t end) {
    NormWeightGradColumns(pdo, px, pmean, prstd, rows, c, begin, end, dw.data<float>(),
                          db.data<float>());
  });
}

void RMSNormForward(const Tensor& x, const Tensor& w, float eps, Tensor& out, Tensor& rstd) {
  const auto [rows, c] = AsRows(x);
  const float* px = x.data<float>();
  const float* pw = w.data<float>();
  float* po = out.data<float>();
  float* prstd = rstd.data<float>();
  ParallelFor(rows, RowGrain(c), [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) prstd[r] = RMSNormRow(px + r * c, pw, c, eps, po + r * c);
  });
}

void RMSNormBackward(const Tensor& dout, const Tensor& x, const Tensor& w, const Tensor& rstd,
                     Tensor& dx, Tensor& dw) {
  const auto [rows, c] = AsRows(x);
  const float* pdo = dout.data<float>();
  const float* px = x.data<float>();
  const float* pw = w.data<float>();
  const float* prstd = rstd.data<float>();
  float* pdx = dx.data<float>();
  ParallelFor(rows, RowGrain(c), [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) {
      RMSNormBackwardRow(pdo + r * c, px + r * c, pw, prstd[r], c, pdx + r * c);
    }
  });
  ParallelFor(c, 64, [&](int64_t begin, int64_t end) {
    NormWeightGradColumns(pdo, px, nullptr, prstd, rows, c, begin, end, dw.data<float>(), nullptr);
  });
}

}  // namespace loom::runtime::kernels::cpu
