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
  // Stored column-major shapes of the call's A, B and C.
  int64_t rows_a = 0, cols_a = 0, rows_b = 0, cols_b = 0, rows_c = 0, cols_c = 0;
  // Their leading dimensions (the row-major operands' row strides; packed: the rows) and the
  // distance between consecutive products of a batch (b's stride for A, a's for B).
  int64_t ld_a = 0, ld_b = 0, ld_c = 0;
  int64_t stride_a = 0, stride_b = 0, stride_c = 0;
};

// A row-major product out[m, n] = op(a) · op(b), a [m, k] ([k, m] if trans_a), b [k, n] ([n, k]
// if trans_b), each row `ld*` elements after the previous (0: packed), and for a batch each
// operand `stride_*` elements after the previous product's.
struct RowMajorGemm {
  int64_t m = 0, n = 0, k = 0;
  bool trans_a = false, trans_b = false;
  int64_t lda = 0, ldb = 0, ldc = 0;
  int64_t stride_a = 0, stride_b = 0, stride_out = 0;
};

inline ColumnMajorGemm ToColumnMajor(const RowMajorGemm& r) {
  ColumnMajorGemm g;
  g.trans_a = r.trans_b;
  g.trans_b = r.trans_a;
  g.m = r.n;
  g.n = r.m;
  g.k = r.k;
  g.rows_a = r.trans_b ? r.k : r.n;
  g.cols_a = r.trans_b ? r.n : r.k;
  g.rows_b = r.trans_a ? r.m : r.k;
  g.cols_b = r.trans_a ? r.k : r.m;
  g.rows_c = r.n;
  g.cols_c = r.m;
  g.ld_a = r.ldb > 0 ? r.ldb : g.rows_a;
  g.ld_b = r.lda > 0 ? r.lda : g.rows_b;
  g.ld_c = r.ldc > 0 ? r.ldc : g.rows_c;
  g.stride_a = r.stride_b;
  g.stride_b = r.stride_a;
  g.stride_c = r.stride_out;
  return g;
}

inline ColumnMajorGemm ToColumnMajor(int64_t m, int64_t n, int64_t k, bool trans_a, bool trans_b) {
  RowMajorGemm r;
  r.m = m;
  r.n = n;
  r.k = k;
  r.trans_a = trans_a;
  r.trans_b = trans_b;
  return ToColumnMajor(r);
}

}  // namespace loom::runtime::kernels::cuda
