// Column sums over rows in the shared blocking (column_sum_formula.h): dst[j] += Σ_r term(r, j),
// the rows in chunks summed in parallel into `partial` ([chunks, cols] device scratch), then the
// chunks' sums added in order. `Term` is a functor __device__ float operator()(int64_t r, int64_t
// j).
#pragma once

#include "runtime/kernels/column_sum_formula.h"
#include "runtime/kernels/cuda/cuda_kernels.h"
#include "runtime/kernels/cuda/launch.h"

namespace loom::runtime::kernels::cuda {
namespace {  // each .cu file its own kernels

template <typename Term>
__global__ void ColumnPartialsKernel(Term term, int64_t rows, int64_t cols, float* partial) {
  const int64_t n = ColumnSumChunks(rows) * cols;
  for (int64_t e = FirstIndex(blockIdx.x, blockDim.x, threadIdx.x); e < n;
       e += Stride(gridDim.x, blockDim.x)) {
    const int64_t c = e / cols, j = e % cols;
    const int64_t r0 = c * kColumnSumRows;
    const int64_t r1 = r0 + kColumnSumRows < rows ? r0 + kColumnSumRows : rows;
    float sum = 0.0f;
    for (int64_t r = r0; r < r1; ++r) sum += term(r, j);
    partial[e] = sum;
  }
}

__global__ void AddPartialsKernel(const float* partial, int64_t chunks, int64_t cols, float* dst) {
  for (int64_t j = FirstIndex(blockIdx.x, blockDim.x, threadIdx.x); j < cols;
       j += Stride(gridDim.x, blockDim.x)) {
    float sum = dst[j];
    for (int64_t c = 0; c < chunks; ++c) sum += partial[c * cols + j];
    dst[j] = sum;
  }
}

template <typename Term>
void ColumnSums(Term term, int64_t rows, int64_t cols, float* partial, float* dst, Stream stream) {
  if (rows == 0 || cols == 0) return;
  const int64_t chunks = ColumnSumChunks(rows);
  const Grid g = GridFor(chunks * cols);
  ColumnPartialsKernel<<<g.blocks, g.threads, 0, stream>>>(term, rows, cols, partial);
  const Grid h = GridFor(cols);
  AddPartialsKernel<<<h.blocks, h.threads, 0, stream>>>(partial, chunks, cols, dst);
}

// The term of a plain column sum: m[r, j].
struct MatrixTerm {
  const float* m;
  int64_t cols;
  __device__ float operator()(int64_t r, int64_t j) const { return m[r * cols + j]; }
};

}  // namespace
}  // namespace loom::runtime::kernels::cuda
