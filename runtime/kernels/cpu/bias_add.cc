#include <algorithm>
#include <vector>

#include "runtime/kernels/column_sum_formula.h"
#include "runtime/kernels/cpu/cpu_kernels.h"
#include "runtime/kernels/cpu/rows.h"
#include "runtime/parallel.h"
#include "runtime/vectorize.h"

namespace loom::runtime::kernels::cpu {

LOOM_VECTORIZED void AddBiasRows(float* x, const float* bias, int64_t rows, int64_t c) {
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t j = 0; j < c; ++j) x[r * c + j] += bias[j];
  }
}

namespace {

// dbias[j] += Σ_r dout[r, j] for the columns [begin, end), in the blocking the CUDA twin shares
// (column_sum_formula.h): each chunk of rows summed in order from zero, then added in order.
LOOM_VECTORIZED void SumColumns(const float* dout, int64_t rows, int64_t c, int64_t begin,
                                int64_t end, float* dbias) {
  const int64_t width = end - begin;
  std::vector<float> chunk(static_cast<size_t>(width));
  float* sum = chunk.data();  // sum[j - begin]
  for (int64_t r0 = 0; r0 < rows; r0 += kColumnSumRows) {
    std::fill(chunk.begin(), chunk.end(), 0.0f);
    for (int64_t r = r0; r < std::min(rows, r0 + kColumnSumRows); ++r) {
      const float* row = dout + r * c + begin;
      for (int64_t j = 0; j < width; ++j) sum[j] += row[j];
    }
    for (int64_t j = 0; j < width; ++j) dbias[begin + j] += sum[j];
  }
}

}  // namespace

void BiasAdd(Tensor& x, const Tensor& bias) {
  const auto [rows, c] = AsRows(x);
  float* px = x.data<float>();
  const float* pb = bias.data<float>();
  ParallelFor(rows, RowGrain(c),
              [&](int64_t begin, int64_t end) { AddBiasRows(px + begin * c, pb, end - begin, c); });
}

void BiasBackward(const Tensor& dout, Tensor& dbias) {
  const auto [rows, c] = AsRows(dout);
  const float* pd = dout.data<float>();
  float* pdb = dbias.data<float>();
  // Columns are split across threads and rows summed in order: deterministic for any split.
  ParallelFor(c, 64, [&](int64_t begin, int64_t end) { SumColumns(pd, rows, c, begin, end, pdb); });
}

}  // namespace loom::runtime::kernels::cpu
