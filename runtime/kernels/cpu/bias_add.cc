#include "runtime/kernels/cpu/cpu_kernels.h"
#include "runtime/kernels/cpu/rows.h"
#include "runtime/parallel.h"

namespace loom::runtime::kernels::cpu {

void BiasAdd(Tensor& x, const Tensor& bias) {
  const auto [rows, c] = AsRows(x);
  float* px = x.data<float>();
  const float* pb = bias.data<float>();
  ParallelFor(rows, RowGrain(c), [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) {
      float* row = px + r * c;
      for (int64_t j = 0; j < c; ++j) row[j] += pb[j];
    }
  });
}

void BiasBackward(const Tensor& dout, Tensor& dbias) {
  const auto [rows, c] = AsRows(dout);
  const float* pd = dout.data<float>();
  float* pdb = dbias.data<float>();
  // Columns are split across threads and rows summed in order: deterministic for any split.
  ParallelFor(c, 64, [&](int64_t begin, int64_t end) {
    for (int64_t r = 0; r < rows; ++r) {
      const float* row = pd + r * c;
      for (int64_t j = begin; j < end; ++j) pdb[j] += row[j];
    }
  });
}

}  // namespace loom::runtime::kernels::cpu
