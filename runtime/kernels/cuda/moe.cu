// The mixture-of-experts row kernels on the device (the CPU's runtime/kernels/cpu/moe.cc): the
// permutation of token rows into expert order, the gate-weighted combine back and its backward,
// and the FP8 rows of the dispatch. One thread block per token row (grid-stride beyond the cap),
// its threads across the row's columns; a slot's gate gradient is a block sum in a fixed tree
// order. FP8 rows: one warp per (row, 128-element block), the CPU's scale formula and its
// saturating nearest-even e4m3, so quantized bytes and scales are the CPU's bit for bit.
#include <cuda_fp16.h>
#include <cuda_fp8.h>

#include "runtime/kernels/cuda/block_reduce.cuh"
#include "runtime/kernels/cuda/cuda_kernels.h"
#include "runtime/kernels/cuda/launch.h"

namespace loom::runtime::kernels::cuda {
namespace {

constexpr int kWarp = 32;

__global__ void PermuteKernel(MoeRowsArgs a, const float* x, float* out) {
  for (int64_t t = blockIdx.x; t < a.tokens; t += gridDim.x) {
    for (int64_t i = 0; i < a.k; ++i) {
      const int32_t r = a.row_of[t * a.k + i];
      if (r < 0) continue;
      for (int64_t c = threadIdx.x; c < a.cols; c += blockDim.x) {
        out[r * a.cols + c] = x[t * a.cols + c];
      }
    }
  }
}

__global__ void CombineKernel(MoeRowsArgs a, const float* y, const float* gates, float* out) {
  for (int64_t t = blockIdx.x; t < a.tokens; t += gridDim.x) {
    for (int64_t c = threadIdx.x; c < a.cols; c += blockDim.x) {
      float acc = 0.0f;  // the slots in order, as the CPU adds them
      for (int64_t i = 0; i < a.k; ++i) {
        const int32_t r = a.row_of[t * a.k + i];
        if (r < 0) continue;
        const float g = gates != nullptr ? gates[t * a.k + i] : 1.0f;
        acc += g * y[r * a.cols + c];
      }
      out[t * a.cols + c] = acc;
    }
  }
}

__global__ void CombineBackwardKernel(MoeRowsArgs a, const float* dout, const float* y,
                                      const float* gates, float* dy, float* dgates) {
  __shared__ float red[kBlock];
  for (int64_t t = blockIdx.x; t < a.tokens; t += gridDim.x) {
    const float* d = dout + t * a.cols;
    for (int64_t i = 0; i < a.k; ++i) {
      const int32_t r = a.row_of[t * a.k + i];  // the same for the whole block
      if (r < 0) {
        if (threadIdx.x == 0) dgates[t * a.k + i] = 0.0f;
        continue;
      }
      const float g = gates[t * a.k + i];
      float dot = 0.0f;
      for (int64_t c = threadIdx.x; c < a.cols; c += blockDim.x) {
        dy[r * a.cols + c] = g * d[c];
        dot += d[c] * y[r * a.cols + c];
      }
      dot = BlockSum(dot, red);
      if (threadIdx.x == 0) dgates[t * a.k + i] = dot;
    }
  }
}

// Unit u = (row r, block b); each lane takes every 32nd element of the block.
__global__ void QuantizeRowsKernel(Fp8RowsArgs a, const float* x, uint8_t* packed) {
  const int64_t blocks = (a.cols + kFp8Block - 1) / kFp8Block, units = a.rows * blocks;
  const int64_t scales_at = (a.cols + 3) / 4 * 4;
  const int lane = threadIdx.x % kWarp;
  const int64_t warps = static_cast<int64_t>(gridDim.x) * (blockDim.x / kWarp);
  for (int64_t u = blockIdx.x * static_cast<int64_t>(blockDim.x / kWarp) + threadIdx.x / kWarp;
       u < units; u += warps) {
    const int64_t r = u / blocks, b = u % blocks;
    const int64_t lo = b * kFp8Block, hi = lo + kFp8Block < a.cols ? lo + kFp8Block : a.cols;
    const float* xr = x + r * a.cols;
    uint8_t* out = packed + r * a.width;
    float m = 0.0f;
    for (int64_t c = lo + lane; c < hi; c += kWarp) m = fmaxf(m, fabsf(xr[c]));
    for (int offset = kWarp / 2; offset > 0; offset /= 2) {
      m = fmaxf(m, __shfl_xor_sync(0xffffffffu, m, offset));
    }
    const float scale = Fp8Scale(m);
    if (lane == 0) *reinterpret_cast<float*>(out + scales_at + 4 * b) = scale;
    for (int64_t c = lo + lane; c < hi; c += kWarp) {
      out[c] =
          static_cast<uint8_t>(__nv_cvt_float_to_fp8(xr[c] / scale, __NV_SATFINITE, __NV_E4M3));
    }
  }
}

__global__ void DequantizeRowsKernel(Fp8RowsArgs a, const uint8_t* packed, float* x) {
  const int64_t n = a.rows * a.cols, scales_at = (a.cols + 3) / 4 * 4;
  for (int64_t i = FirstIndex(blockIdx.x, blockDim.x, threadIdx.x); i < n;
       i += Stride(gridDim.x, blockDim.x)) {
    const int64_t r = i / a.cols, c = i % a.cols;
    const uint8_t* in = packed + r * a.width;
    const float scale = *reinterpret_cast<const float*>(in + scales_at + 4 * (c / kFp8Block));
    const __half_raw h = __nv_cvt_fp8_to_halfraw(in[c], __NV_E4M3);
    x[i] = __half2float(__half(h)) * scale;
  }
}

}  // namespace

void MoePermute(const MoeRowsArgs& a, const float* x, float* out, Stream stream) {
  if (a.tokens == 0) return;
  PermuteKernel<<<RowBlocks(a.tokens), kBlock, 0, stream>>>(a, x, out);
}

void MoeCombine(const MoeRowsArgs& a, const float* y, const float* gates, float* out,
                Stream stream) {
  if (a.tokens == 0) return;
  CombineKernel<<<RowBlocks(a.tokens), kBlock, 0, stream>>>(a, y, gates, out);
}

void MoeCombineBackward(const MoeRowsArgs& a, const float* dout, const float* y, const float* gates,
                        float* dy, float* dgates, Stream stream) {
  if (a.tokens == 0) return;
  CombineBackwardKernel<<<RowBlocks(a.tokens), kBlock, 0, stream>>>(a, dout, y, gates, dy, dgates);
}

void QuantizeRowsFp8(const Fp8RowsArgs& a, const float* x, uint8_t* packed, Stream stream) {
  const int64_t units = a.rows * ((a.cols + kFp8Block - 1) / kFp8Block);
  const Grid g = GridFor(units * kWarp);
  if (g.blocks == 0) return;
  QuantizeRowsKernel<<<g.blocks, g.threads, 0, stream>>>(a, x, packed);
}

void DequantizeRowsFp8(const Fp8RowsArgs& a, const uint8_t* packed, float* x, Stream stream) {
  const Grid g = GridFor(a.rows * a.cols);
  if (g.blocks == 0) return;
  DequantizeRowsKernel<<<g.blocks, g.threads, 0, stream>>>(a, packed, x);
}

}  // namespace loom::runtime::kernels::cuda
