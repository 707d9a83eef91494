// LayerNorm and RMSNorm forward and backward on the device (the CPU's runtime/kernels/cpu/
// norm.cc): one block per row for the statistics and dx (block sums in a fixed tree order, so
// results do not depend on timing), one thread per column for dw (and db), summing the rows in
// order as the CPU does.
#include "runtime/kernels/cuda/block_reduce.cuh"
#include "runtime/kernels/cuda/column_sum.cuh"
#include "runtime/kernels/cuda/cuda_kernels.h"
#include "runtime/kernels/cuda/launch.h"

namespace loom::runtime::kernels::cuda {
namespace {

__global__ void LayerNormForwardKernel(LayerNormArgs a, float eps) {
  __shared__ float shared[kBlock];
  const float c = static_cast<float>(a.cols);
  for (int64_t r = blockIdx.x; r < a.rows; r += gridDim.x) {
    const float* x = a.x + r * a.cols;
    float sum = 0.0f;
    for (int64_t j = threadIdx.x; j < a.cols; j += blockDim.x) sum += x[j];
    const float m = BlockSum(sum, shared) / c;
    float squares = 0.0f;
    for (int64_t j = threadIdx.x; j < a.cols; j += blockDim.x) squares += (x[j] - m) * (x[j] - m);
    const float s = 1.0f / sqrtf(BlockSum(squares, shared) / c + eps);
    float* out = a.out + r * a.cols;
    for (int64_t j = threadIdx.x; j < a.cols; j += blockDim.x) {
      out[j] = (x[j] - m) * s * a.w[j] + a.b[j];
    }
    if (threadIdx.x == 0) {
      a.mean[r] = m;
      a.rstd[r] = s;
    }
  }
}

// dx += (dout·w - mean(dout·w) - n · mean(dout·w·n)) · rstd with n = (x - mean) · rstd.
__global__ void LayerNormBackwardInputKernel(LayerNormGradArgs a) {
  __shared__ float shared[kBlock];
  const float c = static_cast<float>(a.cols);
  for (int64_t r = blockIdx.x; r < a.rows; r += gridDim.x) {
    const float* x = a.x + r * a.cols;
    const float* dout = a.dout + r * a.cols;
    const float m = a.mean[r], s = a.rstd[r];
    float dnorm = 0.0f, dnorm_norm = 0.0f;
    for (int64_t j = threadIdx.x; j < a.cols; j += blockDim.x) {
      dnorm += dout[j] * a.w[j];
      dnorm_norm += dout[j] * a.w[j] * ((x[j] - m) * s);
    }
    const float dnorm_mean = BlockSum(dnorm, shared) / c;
    const float dnorm_norm_mean = BlockSum(dnorm_norm, shared) / c;
    float* dx = a.dx + r * a.cols;
    for (int64_t j = threadIdx.x; j < a.cols; j += blockDim.x) {
      const float norm = (x[j] - m) * s;
      dx[j] += (dout[j] * a.w[j] - dnorm_mean - norm * dnorm_norm_mean) * s;
    }
  }
}

// dw's term: dout[r, j] · n[r, j], n the normalised input (RMSNorm: no mean).
struct NormWeightTerm {
  LayerNormGradArgs a;
  __device__ float operator()(int64_t r, int64_t j) const {
    const float m = a.mean != nullptr ? a.mean[r] : 0.0f;
    return a.dout[r * a.cols + j] * ((a.x[r * a.cols + j] - m) * a.rstd[r]);
  }
};

// dw[j] += Σ_r dout · n and db[j] += Σ_r dout (RMSNorm: no db), in the blocking of
// column_sum_formula.h, through a.partial.
void NormBackwardWeight(const LayerNormGradArgs& a, Stream stream) {
  ColumnSums(NormWeightTerm{a}, a.rows, a.cols, a.partial, a.dw, stream);
  if (a.db != nullptr)
    ColumnSums(MatrixTerm{a.dout, a.cols}, a.rows, a.cols, a.partial, a.db, stream);
}

// out = x · s · w with s = 1 / sqrt(mean(x²) + eps), saved per row.
__global__ void RMSNormForwardKernel(LayerNormArgs a, float eps) {
  __shared__ float shared[kBlock];
  const float c = static_cast<float>(a.cols);
  for (int64_t r = blockIdx.x; r < a.rows; r += gridDim.x) {
    const float* x = a.x + r * a.cols;
    float squares = 0.0f;
    for (int64_t j = threadIdx.x; j < a.cols; j += blockDim.x) squares += x[j] * x[j];
    const float s = 1.0f / sqrtf(BlockSum(squares, shared) / c + eps);
    float* out = a.out + r * a.cols;
    for (int64_t j = threadIdx.x; j < a.cols; j += blockDim.x) out[j] = x[j] * s * a.w[j];
    if (threadIdx.x == 0) a.rstd[r] = s;
  }
}

// With n = x·s: dx += s · (dn - n · mean(dn · n)), dn = dout · w.
__global__ void RMSNormBackwardInputKernel(LayerNormGradArgs a) {
  __shared__ float shared[kBlock];
  const float c = static_cast<float>(a.cols);
  for (int64_t r = blockIdx.x; r < a.rows; r += gridDim.x) {
    const float* x = a.x + r * a.cols;
    const float* dout = a.dout + r * a.cols;
    const float s = a.rstd[r];
    float dnorm_norm = 0.0f;
    for (int64_t j = threadIdx.x; j < a.cols; j += blockDim.x) {
      dnorm_norm += dout[j] * a.w[j] * (x[j] * s);
    }
    const float dnorm_norm_mean = BlockSum(dnorm_norm, shared) / c;
    float* dx = a.dx + r * a.cols;
    for (int64_t j = threadIdx.x; j < a.cols; j += blockDim.x) {
      dx[j] += (dout[j] * a.w[j] - x[j] * s * dnorm_norm_mean) * s;
    }
  }
}

}  // namespace

void LayerNormForward(const LayerNormArgs& args, float eps, Stream stream) {
  if (args.rows == 0 || args.cols == 0) return;
  LayerNormForwardKernel<<<RowBlocks(args.rows), kBlock, 0, stream>>>(args, eps);
}

void LayerNormBackward(const LayerNormGradArgs& args, Stream stream) {
  if (args.rows == 0 || args.cols == 0) return;
  LayerNormBackwardInputKernel<<<RowBlocks(args.rows), kBlock, 0, stream>>>(args);
  NormBackwardWeight(args, stream);
}

void RMSNormForward(const LayerNormArgs& args, float eps, Stream stream) {
  if (args.rows == 0 || args.cols == 0) return;
  RMSNormForwardKernel<<<RowBlocks(args.rows), kBlock, 0, stream>>>(args, eps);
}

void RMSNormBackward(const LayerNormGradArgs& args, Stream stream) {
  if (args.rows == 0 || args.cols == 0) return;
  RMSNormBackwardInputKernel<<<RowBlocks(args.rows), kBlock, 0, stream>>>(args);
  NormBackwardWeight(args, stream);
}

}  // namespace loom::runtime::kernels::cuda
