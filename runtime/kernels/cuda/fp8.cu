// FP8 quantization on the device (the CPU's runtime/kernels/cpu/fp8.cc): each block's largest
// magnitude (NaNs ignored, as the CPU's max), its scale by the shared formula (fp8_formula.h), and
// x / scale rounded to the nearest e4m3, saturating at ±448 (the CPU's conversion), so the result
// is the CPU's bit for bit. Per tensor: a grid-wide maximum (atomicMax on the bits of non-negative
// floats: order-free), then the quantization; 1 x 128: one warp per block of a row; 128 x 128:
// one thread block per tile.
#include <cuda_fp8.h>

#include "runtime/bf16_bits.h"
#include "runtime/kernels/cuda/block_reduce.cuh"
#include "runtime/kernels/cuda/cuda_kernels.h"
#include "runtime/kernels/cuda/launch.h"

namespace loom::runtime::kernels::cuda {
namespace {

constexpr int kWarp = 32;

__device__ float LoadX(const Fp8QuantizeArgs& a, int64_t i) {
  return a.bf16 ? BF16BitsToF32(static_cast<const uint16_t*>(a.x)[i])
                : static_cast<const float*>(a.x)[i];
}

__device__ uint8_t ToE4M3(float v) {
  return static_cast<uint8_t>(__nv_cvt_float_to_fp8(v, __NV_SATFINITE, __NV_E4M3));
}

__global__ void TensorMaxKernel(Fp8QuantizeArgs a) {
  __shared__ float red[kBlock];
  const int64_t n = a.rows * a.cols;
  float m = 0.0f;
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    m = fmaxf(m, fabsf(LoadX(a, i)));
  }
  m = BlockMax(m, red);
  if (threadIdx.x == 0) atomicMax(reinterpret_cast<int*>(a.amax), __float_as_int(m));
}

__global__ void TensorQuantizeKernel(Fp8QuantizeArgs a) {
  const float scale = Fp8Scale(*a.amax);
  if (blockIdx.x == 0 && threadIdx.x == 0) a.scales[0] = scale;
  const int64_t n = a.rows * a.cols;
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    a.q[i] = ToE4M3(LoadX(a, i) / scale);
  }
}

// Unit u = (row r, block kb): r = u / blocks, kb = u % blocks; each lane takes every 32nd element.
__global__ void RowBlocksKernel(Fp8QuantizeArgs a) {
  const int64_t blocks = (a.cols + kFp8Block - 1) / kFp8Block;
  const int64_t units = a.rows * blocks;
  const int lane = threadIdx.x % kWarp;
  const int64_t warps = static_cast<int64_t>(gridDim.x) * (blockDim.x / kWarp);
  for (int64_t u = blockIdx.x * static_cast<int64_t>(blockDim.x / kWarp) + threadIdx.x / kWarp;
       u < units; u += warps) {
    const int64_t r = u / blocks, kb = u % blocks;
    const int64_t lo = kb * kFp8Block;
    const int64_t hi = lo + kFp8Block < a.cols ? lo + kFp8Block : a.cols;
    float m = 0.0f;
    for (int64_t c = lo + lane; c < hi; c += kWarp) m = fmaxf(m, fabsf(LoadX(a, r * a.cols + c)));
    for (int offset = kWarp / 2; offset > 0; offset /= 2) {
      m = fmaxf(m, __shfl_xor_sync(0xffffffffu, m, offset));
    }
    const float scale = Fp8Scale(m);
    if (lane == 0) a.scales[kb * a.rows + r] = scale;
    for (int64_t c = lo + lane; c < hi; c += kWarp) {
      a.q[r * a.cols + c] = ToE4M3(LoadX(a, r * a.cols + c) / scale);
    }
  }
}

// One thread block per 128 x 128 tile (rb, kb); scales row stride `ld`.
__global__ void TileKernel(Fp8QuantizeArgs a, int64_t ld) {
  __shared__ float red[kBlock];
  const int64_t col_blocks = (a.cols + kFp8Block - 1) / kFp8Block;
  const int64_t tiles = ((a.rows + kFp8Block - 1) / kFp8Block) * col_blocks;
  for (int64_t t = blockIdx.x; t < tiles; t += gridDim.x) {
    const int64_t rb = t / col_blocks, kb = t % col_blocks;
    const int64_t r0 = rb * kFp8Block, c0 = kb * kFp8Block;
    const int64_t h = (r0 + kFp8Block < a.rows ? r0 + kFp8Block : a.rows) - r0;
    const int64_t w = (c0 + kFp8Block < a.cols ? c0 + kFp8Block : a.cols) - c0;
    float m = 0.0f;
    for (int64_t e = threadIdx.x; e < h * w; e += blockDim.x) {
      m = fmaxf(m, fabsf(LoadX(a, (r0 + e / w) * a.cols + c0 + e % w)));
    }
    const float scale = Fp8Scale(BlockMax(m, red));
    if (threadIdx.x == 0) a.scales[rb * ld + kb] = scale;
    for (int64_t e = threadIdx.x; e < h * w; e += blockDim.x) {
      const int64_t i = (r0 + e / w) * a.cols + c0 + e % w;
      a.q[i] = ToE4M3(LoadX(a, i) / scale);
    }
  }
}

}  // namespace

void QuantizeFp8(const Fp8QuantizeArgs& a, Stream stream) {
  const int64_t n = a.rows * a.cols;
  if (n == 0) return;
  switch (a.blocks) {
    case Fp8Blocks::kTensor: {
      const Grid g = GridFor(n);
      (void)cudaMemsetAsync(a.amax, 0, sizeof(float), stream);
      TensorMaxKernel<<<g.blocks, g.threads, 0, stream>>>(a);
      TensorQuantizeKernel<<<g.blocks, g.threads, 0, stream>>>(a);
      return;
    }
    case Fp8Blocks::k1x128: {
      const int64_t units = a.rows * ((a.cols + kFp8Block - 1) / kFp8Block);
      const int64_t per_block = kBlock / kWarp;
      RowBlocksKernel<<<RowBlocks((units + per_block - 1) / per_block), kBlock, 0, stream>>>(a);
      return;
    }
    case Fp8Blocks::k128x128: {
      const int64_t tiles =
          ((a.rows + kFp8Block - 1) / kFp8Block) * ((a.cols + kFp8Block - 1) / kFp8Block);
      const int64_t ld = a.scale_elements / ((a.rows + kFp8Block - 1) / kFp8Block);
      (void)cudaMemsetAsync(a.scales, 0, a.scale_elements * sizeof(float), stream);  // padding
      TileKernel<<<RowBlocks(tiles), kBlock, 0, stream>>>(a, ld);
      return;
    }
  }
}

}  // namespace loom::runtime::kernels::cuda
