// Helpers for CPU kernels that work on the last dimension: the [rows, cols] view of a tensor.
#pragma once

#include <cstdint>

#include "runtime/tensor.h"

namespace loom::runtime::kernels::cpu {

struct RowsCols {
  int64_t rows;
  int64_t cols;
};

// Leading dimensions fold into rows: [B, T, C] is [B·T, C]; a scalar is [1, 1].
inline RowsCols AsRows(const Tensor& t) {
  int64_t rows = 1;
  for (int i = 0; i + 1 < t.rank(); ++i) rows *= t.dim(i);
  return {rows, t.rank() == 0 ? 1 : t.dim(-1)};
}

// Rows per ParallelFor chunk so that a chunk holds about 16K elements.
// x[r, j] += bias[j] for `rows` rows of `c` floats (kernels/cpu/bias_add.cc; vectorised).
void AddBiasRows(float* x, const float* bias, int64_t rows, int64_t c);

inline int64_t RowGrain(int64_t cols) { return cols >= 16384 ? 1 : 16384 / (cols + 1) + 1; }

}  // namespace loom::runtime::kernels::cpu
