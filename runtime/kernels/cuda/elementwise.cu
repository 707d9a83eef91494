#include <cuda_fp16.h>

#include "runtime/bf16_bits.h"
#include "runtime/kernels/cuda/cuda_kernels.h"
#include "runtime/kernels/cuda/launch.h"
#include "runtime/kernels/gelu_formula.h"

namespace loom::runtime::kernels::cuda {
namespace {

__global__ void AddKernel(const float* a, const float* b, float* out, int64_t n) {
  for (int64_t i = FirstIndex(blockIdx.x, blockDim.x, threadIdx.x); i < n;
       i += Stride(gridDim.x, blockDim.x)) {
    out[i] = a[i] + b[i];
  }
}

__global__ void GeluForwardKernel(const float* x, float* out, int64_t n) {
  for (int64_t i = FirstIndex(blockIdx.x, blockDim.x, threadIdx.x); i < n;
       i += Stride(gridDim.x, blockDim.x)) {
    const float v = x[i];
    out[i] = GeluFromTanh(v, tanhf(GeluInner(v)));
  }
}

__global__ void GeluBackwardKernel(const float* dout, const float* x, float* dx, int64_t n) {
  for (int64_t i = FirstIndex(blockIdx.x, blockDim.x, threadIdx.x); i < n;
       i += Stride(gridDim.x, blockDim.x)) {
    const float v = x[i];
    dx[i] += GeluGradFromTanh(v, tanhf(GeluInner(v))) * dout[i];
  }
}

__global__ void AdamWKernel(AdamWArgs a, AdamWStep k, int64_t n) {
  for (int64_t i = FirstIndex(blockIdx.x, blockDim.x, threadIdx.x); i < n;
       i += Stride(gridDim.x, blockDim.x)) {
    AdamWElement(k, a.master[i], a.grad[i], a.m[i], a.v[i]);
    if (a.copy_bf16 != nullptr) a.copy_bf16[i] = F32BitsToBF16(__float_as_uint(a.master[i]));
  }
}

__device__ float LoadAsF32(const void* x, ElemType type, int64_t i) {
  switch (type) {
    case ElemType::kBF16:
      return __uint_as_float(static_cast<uint32_t>(static_cast<const uint16_t*>(x)[i]) << 16);
    case ElemType::kF16:
      return __half2float(static_cast<const __half*>(x)[i]);
    default:
      return static_cast<const float*>(x)[i];
  }
}

// One thread per block of kSumOfSquaresBlock elements, in index order (the CPU's order).
__global__ void BlockSquaresKernel(const void* x, ElemType type, int64_t n, double* partial) {
  const int64_t blocks = SumOfSquaresBlocks(n);
  for (int64_t blk = FirstIndex(blockIdx.x, blockDim.x, threadIdx.x); blk < blocks;
       blk += Stride(gridDim.x, blockDim.x)) {
    const int64_t stop = n < (blk + 1) * kSumOfSquaresBlock ? n : (blk + 1) * kSumOfSquaresBlock;
    double s = 0.0;
    for (int64_t i = blk * kSumOfSquaresBlock; i < stop; ++i) {
      const double v = LoadAsF32(x, type, i);
      s += v * v;
    }
    partial[blk] = s;
  }
}

__global__ void TotalKernel(const double* partial, int64_t blocks, double* total) {
  double t = 0.0;
  for (int64_t b = 0; b < blocks; ++b) t += partial[b];
  *total = t;
}

__global__ void SpinKernel(int64_t cycles) {
  const long long start = clock64();
  while (clock64() - start < cycles) {
  }
}

}  // namespace

void SpinForTesting(int64_t cycles, Stream stream) { SpinKernel<<<1, 1, 0, stream>>>(cycles); }

void SumOfSquares(const void* x, ElemType type, int64_t n, double* partial, double* total,
                  Stream stream) {
  const int64_t blocks = SumOfSquaresBlocks(n);
  const Grid g = GridFor(blocks);
  if (g.blocks > 0) BlockSquaresKernel<<<g.blocks, g.threads, 0, stream>>>(x, type, n, partial);
  TotalKernel<<<1, 1, 0, stream>>>(partial, blocks, total);
}

void AdamWUpdate(const AdamWArgs& args, const AdamWStep& step, int64_t n, Stream stream) {
  const Grid g = GridFor(n);
  if (g.blocks > 0) AdamWKernel<<<g.blocks, g.threads, 0, stream>>>(args, step, n);
}

void Add(const float* a, const float* b, float* out, int64_t n, Stream stream) {
  const Grid g = GridFor(n);
  if (g.blocks > 0) AddKernel<<<g.blocks, g.threads, 0, stream>>>(a, b, out, n);
}

void GeluForward(const float* x, float* out, int64_t n, Stream stream) {
  const Grid g = GridFor(n);
  if (g.blocks > 0) GeluForwardKernel<<<g.blocks, g.threads, 0, stream>>>(x, out, n);
}

void GeluBackward(const float* dout, const float* x, float* dx, int64_t n, Stream stream) {
  const Grid g = GridFor(n);
  if (g.blocks > 0) GeluBackwardKernel<<<g.blocks, g.threads, 0, stream>>>(dout, x, dx, n);
}

}  // namespace loom::runtime::kernels::cuda
