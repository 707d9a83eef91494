// Block-wide reductions for kernels launched with blockDim.x == kBlock, in a fixed tree order, so
// results do not depend on timing. Every thread of the block must call them (they synchronise);
// `shared` holds kBlock floats.
#pragma once

#include "runtime/kernels/cuda/launch.h"

namespace loom::runtime::kernels::cuda {

template <typename Op>
__device__ float BlockReduce(float v, float* shared, Op op) {
  shared[threadIdx.x] = v;
  __syncthreads();
  for (int half = kBlock / 2; half > 0; half /= 2) {
    if (static_cast<int>(threadIdx.x) < half) {
      shared[threadIdx.x] = op(shared[threadIdx.x], shared[threadIdx.x + half]);
    }
    __syncthreads();
  }
  const float result = shared[0];
  __syncthreads();  // before the next call overwrites it
  return result;
}

__device__ inline float BlockSum(float v, float* shared) {
  return BlockReduce(v, shared, [](float a, float b) { return a + b; });
}

__device__ inline float BlockMax(float v, float* shared) {
  return BlockReduce(v, shared, [](float a, float b) { return fmaxf(a, b); });
}

}  // namespace loom::runtime::kernels::cuda
