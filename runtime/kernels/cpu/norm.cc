#include <cmath>

#include "runtime/kernels/cpu/cpu_kernels.h"
#include "runtime/kernels/cpu/rows.h"
#include "runtime/parallel.h"

namespace loom::runtime::kernels::cpu {

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
      const float* xr = px + r * c;
      // Two passes (mean, then centred variance) avoid the cancellation of E[x²] - E[x]².
      float sum = 0.0f;
      for (int64_t j = 0; j < c; ++j) sum += xr[j];
      const float m = sum / static_cast<float>(c);
      float var = 0.0f;
      for (int64_t j = 0; j < c; ++j) var += (xr[j] - m) * (xr[j] - m);
      const float s = 1.0f / std::sqrt(var / static_cast<float>(c) + eps);
      float* orow = po + r * c;
      for (int64_t j = 0; j < c; ++j) orow[j] = (xr[j] - m) * s * pw[j] + pb[j];
      pmean[r] = m;
      prstd[r] = s;
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
  float* pdw = dw.data<float>();
  float* pdb = db.data<float>();
  // dx: rows are independent.
  ParallelFor(rows, RowGrain(c), [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) {
      const float* xr = px + r * c;
      const float* dr = pdo + r * c;
      const float m = pmean[r];
      const float s = prstd[r];
      float dnorm_mean = 0.0f;
      float dnorm_norm_mean = 0.0f;
      for (int64_t j = 0; j < c; ++j) {
        const float dnorm = dr[j] * pw[j];
        dnorm_mean += dnorm;
        dnorm_norm_mean += dnorm * (xr[j] - m) * s;
      }
      dnorm_mean /= static_cast<float>(c);
      dnorm_norm_mean /= static_cast<float>(c);
      float* dxr = pdx + r * c;
      for (int64_t j = 0; j < c; ++j) {
        const float norm = (xr[j] - m) * s;
        dxr[j] += (dr[j] * pw[j] - dnorm_mean - norm * dnorm_norm_mean) * s;
      }
    }
  });
  // dw, db: sums over rows, split by columns so each column is summed in row order.
  ParallelFor(c, 64, [&](int64_t begin, int64_t end) {
    for (int64_t r = 0; r < rows; ++r) {
      const float* xr = px + r * c;
      const float* dr = pdo + r * c;
      const float m = pmean[r];
      const float s = prstd[r];
      for (int64_t j = begin; j < end; ++j) {
        pdw[j] += dr[j] * (xr[j] - m) * s;
        pdb[j] += dr[j];
      }
    }
  });
}

void RMSNormForward(const Tensor& x, const Tensor& w, float eps, Tensor& out, Tensor& rstd) {
  const auto [rows, c] = AsRows(x);
  const float* px = x.data<float>();
  const float* pw = w.data<float>();
  float* po = out.data<float>();
  float* prstd = rstd.data<float>();
  ParallelFor(rows, RowGrain(c), [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) {
      const float* xr = px + r * c;
      float ss = 0.0f;
      for (int64_t j = 0; j < c; ++j) ss += xr[j] * xr[j];
      const float s = 1.0f / std::sqrt(ss / static_cast<float>(c) + eps);
      float* orow = po + r * c;
      for (int64_t j = 0; j < c; ++j) orow[j] = xr[j] * s * pw[j];
      prstd[r] = s;
    }
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
  float* pdw = dw.data<float>();
  ParallelFor(rows, RowGrain(c), [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) {
      const float* xr = px + r * c;
      const float* dr = pdo + r * c;
      const float s = prstd[r];
      // With n = x·s: dx = s · (dn - n · mean(dn · n)), dn = dout · w.
      float dnorm_norm_mean = 0.0f;
      for (int64_t j = 0; j < c; ++j) dnorm_norm_mean += dr[j] * pw[j] * xr[j] * s;
      dnorm_norm_mean /= static_cast<float>(c);
      float* dxr = pdx + r * c;
      for (int64_t j = 0; j < c; ++j) {
        dxr[j] += (dr[j] * pw[j] - xr[j] * s * dnorm_norm_mean) * s;
      }
    }
  });
  ParallelFor(c, 64, [&](int64_t begin, int64_t end) {
    for (int64_t r = 0; r < rows; ++r) {
      const float* xr = px + r * c;
      const float* dr = pdo + r * c;
      const float s = prstd[r];
      for (int64_t j = begin; j < end; ++j) pdw[j] += dr[j] * xr[j] * s;
    }
  });
}

}  // namespace loom::runtime::kernels::cpu
