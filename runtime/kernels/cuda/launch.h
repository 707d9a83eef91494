// Grid arithmetic shared by the CUDA kernels, written for the host too so that it is tested on
// machines without a GPU (tests/runtime/cuda/launch_test.cc).
//
//   const Grid g = GridFor(n);                 // blocks of kBlock threads, at most kMaxBlocks
//   Kernel<<<g.blocks, g.threads, 0, stream>>>(..., n);
//   for (int64_t i = FirstIndex(blockIdx.x, blockDim.x, threadIdx.x); i < n;
//        i += Stride(gridDim.x, blockDim.x)) { ... }   // grid-stride: every i once
#pragma once

#include <algorithm>
#include <cstdint>

#include "runtime/host_device.h"

namespace loom::runtime::kernels::cuda {

inline constexpr int kBlock = 256;
// Enough blocks to fill any current GPU several times over; a grid-stride loop covers the rest.
inline constexpr int64_t kMaxBlocks = 8192;

struct Grid {
  int64_t blocks = 0;
  int threads = 0;
};

// The launch shape for n elements, one per thread until kMaxBlocks: {0, 0} for n <= 0 (launch
// nothing).
inline Grid GridFor(int64_t n, int block = kBlock) {
  if (n <= 0) return {};
  return {std::min<int64_t>((n + block - 1) / block, kMaxBlocks), block};
}

// Kernels that give each row (or other unit of work) a block of kBlock threads launch
// RowBlocks(rows) blocks and loop over rows with a stride of gridDim.x beyond the cap.
inline constexpr int64_t kMaxRowBlocks = 65535;
inline int64_t RowBlocks(int64_t rows) {
  return std::min(std::max<int64_t>(rows, 0), kMaxRowBlocks);
}

// The first element of a thread and the step between its elements in a grid-stride loop, in 64
// bits (a grid covers more than 2^31 elements only through the loop, never by overflowing).
LOOM_HOST_DEVICE inline int64_t FirstIndex(int64_t block, int64_t block_dim, int64_t thread) {
  return block * block_dim + thread;
}
LOOM_HOST_DEVICE inline int64_t Stride(int64_t grid_dim, int64_t block_dim) {
  return grid_dim * block_dim;
}

}  // namespace loom::runtime::kernels::cuda
