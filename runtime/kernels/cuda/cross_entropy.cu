// Softmax cross-entropy on the device (the CPU's runtime/kernels/cpu/cross_entropy.cc): one block
// per row for the statistics (max, then Σ exp, each in a fixed tree order), element-wise kernels
// for the rest. The CPU's exp is a fast approximation and its sums run in other orders: results
// agree within a tolerance, not bitwise.
#include "runtime/kernels/cuda/block_reduce.cuh"
#include "runtime/kernels/cuda/cuda_kernels.h"
#include "runtime/kernels/cuda/launch.h"

namespace loom::runtime::kernels::cuda {
namespace {

// The position of row r's target in this shard's columns, or -1 when it is elsewhere.
__device__ int64_t TargetColumn(const CrossEntropyArgs& a, int64_t r) {
  const int64_t local = static_cast<int64_t>(a.targets[r]) - a.vocab_start;
  return local >= 0 && local < a.vocab ? local : -1;
}

__global__ void StatsKernel(CrossEntropyArgs a, float* row_max, float* sum_exp,
                            float* target_logit) {
  __shared__ float shared[kBlock];
  for (int64_t r = blockIdx.x; r < a.rows; r += gridDim.x) {
    const float* l = a.logits + r * a.vocab;
    float m = -INFINITY;
    for (int64_t j = threadIdx.x; j < a.vocab; j += blockDim.x) m = fmaxf(m, l[j]);
    m = BlockMax(m, shared);
    float s = 0.0f;
    for (int64_t j = threadIdx.x; j < a.vocab; j += blockDim.x) s += expf(l[j] - m);
    s = BlockSum(s, shared);
    if (threadIdx.x == 0) {
      const int64_t t = TargetColumn(a, r);
      row_max[r] = m;
      sum_exp[r] = s;
      target_logit[r] = t >= 0 ? l[t] : 0.0f;
    }
  }
}

__global__ void RescaleKernel(const float* local_max, const float* global_max, float* sum_exp,
                              int64_t rows) {
  for (int64_t r = FirstIndex(blockIdx.x, blockDim.x, threadIdx.x); r < rows;
       r += Stride(gridDim.x, blockDim.x)) {
    sum_exp[r] *= expf(local_max[r] - global_max[r]);
  }
}

__global__ void LossKernel(const float* row_max, const float* sum_exp, const float* target_logit,
                           float* losses, int64_t rows) {
  for (int64_t r = FirstIndex(blockIdx.x, blockDim.x, threadIdx.x); r < rows;
       r += Stride(gridDim.x, blockDim.x)) {
    losses[r] = logf(sum_exp[r]) + row_max[r] - target_logit[r];
  }
}

// dlogits[r, j] += g · exp(l - max) / Σ, then -= g at the target (the CPU's two steps, in order).
__global__ void BackwardKernel(CrossEntropyArgs a, const float* row_max, const float* sum_exp,
                               const float* dloss, float* dlogits) {
  const int64_t n = a.rows * a.vocab;
  for (int64_t e = FirstIndex(blockIdx.x, blockDim.x, threadIdx.x); e < n;
       e += Stride(gridDim.x, blockDim.x)) {
    const int64_t r = e / a.vocab, j = e % a.vocab;
    const float g = dloss[r];
    float d = dlogits[e] + (g / sum_exp[r]) * expf(a.logits[e] - row_max[r]);
    if (j == TargetColumn(a, r)) d -= g;
    dlogits[e] = d;
  }
}

}  // namespace

void CrossEntropyStats(const CrossEntropyArgs& args, float* row_max, float* sum_exp,
                       float* target_logit, Stream stream) {
  const int64_t blocks = RowBlocks(args.rows);
  if (blocks > 0) {
    StatsKernel<<<blocks, kBlock, 0, stream>>>(args, row_max, sum_exp, target_logit);
  }
}

void CrossEntropyRescale(const float* local_max, const float* global_max, float* sum_exp,
                         int64_t rows, Stream stream) {
  const Grid g = GridFor(rows);
  if (g.blocks > 0) {
    RescaleKernel<<<g.blocks, g.threads, 0, stream>>>(local_max, global_max, sum_exp, rows);
  }
}

void CrossEntropyLoss(const float* row_max, const float* sum_exp, const float* target_logit,
                      float* losses, int64_t rows, Stream stream) {
  const Grid g = GridFor(rows);
  if (g.blocks > 0) {
    LossKernel<<<g.blocks, g.threads, 0, stream>>>(row_max, sum_exp, target_logit, losses, rows);
  }
}

void CrossEntropyBackward(const CrossEntropyArgs& args, const float* row_max, const float* sum_exp,
                          const float* dloss, float* dlogits, Stream stream) {
  const Grid g = GridFor(args.rows * args.vocab);
  if (g.blocks > 0) {
    BackwardKernel<<<g.blocks, g.threads, 0, stream>>>(args, row_max, sum_exp, dloss, dlogits);
  }
}

}  // namespace loom::runtime::kernels::cuda
