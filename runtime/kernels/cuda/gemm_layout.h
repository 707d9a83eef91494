// How a row-major GEMM maps onto one column-major BLAS call without moving any data (the cuBLASLt
// twin, runtime/kernels/cuda/gemm.cc). Row-major out[m, n] = op(a) · op(b) read column-major is
// outᵀ[n, m] = op(b)ᵀ · op(a)ᵀ, and a row-major buffer read column-major is its transpose: the
// BLAS call's A is b's buffer and its B is a's, each transposed exactly when the row-major operand
// is. Host code (tested on the CPU: tests/runtime/cuda/launch_test.cc); C++17, no CUDA headers.
#pragma once

#include <cstdint>

namespace loom::runtime::kernels::cuda {

struct ColumnMajorGemm {
  bool trans_a = false, trans_b = false;  // the call's ops on its A (b's buffer) and B (a's)
  int64_t m = 0, n = 0, k = 0;            // the call's C is m x n, the inner dimension k
  // Stored column-major shapes of the call's A, B and C; each leading dimension is its rows.
  int64_t rows_a = 0, cols_a = 0, rows_b = 0, cols_b = 0, rows_c = 0, cols_c = 0;
};

// For row-major out[m, n] = op(a) · op(b), a [m, k] ([k, m] if trans_a), b [k, n] ([n, k] if
// trans_b).
inline ColumnMajorGemm ToColumnMajor(int64_t m, int64_t n, int64_t k, bool trans_a, bool trans_b) {
  ColumnMajorGemm g;
  g.trans_a = trans_b;
  g.trans_b = trans_a;
  g.m = n;
  g.n = m;
  g.k = k;
  g.rows_a = trans_b ? k : n;
  g.cols_a = trans_b ? n : k;
  g.rows_b = trans_a ? m : k;
  g.cols_b = trans_a ? k : m;
  g.rows_c = n;
  g.cols_c = m;
  return g;
}

}  // namespace loom::runtime::kernels::cuda
