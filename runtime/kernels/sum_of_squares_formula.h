// The blocking of SumOfSquares, shared by the CPU kernel and its CUDA twin so both add in the same
// order: each block of kSumOfSquaresBlock elements in double, over kSumOfSquaresLanes running
// sums that are then added pairwise (SumOfSquaresOfBlock), then the block sums in order. C++17
// and free of loom headers beyond host_device.h, for device code.
#pragma once

#include <cstdint>

#include "runtime/host_device.h"

namespace loom::runtime::kernels {

inline constexpr int64_t kSumOfSquaresBlock = 4096;

LOOM_HOST_DEVICE inline int64_t SumOfSquaresBlocks(int64_t n) {
  return (n + kSumOfSquaresBlock - 1) / kSumOfSquaresBlock;
}

// Independent running sums per block: element begin + j goes to lane j % kSumOfSquaresLanes, so
// a CPU adds a vector of squares at a time instead of waiting on one sum.
inline constexpr int kSumOfSquaresLanes = 8;

// v * v in double, never fused into the next addition (the CPU compiles with
// -ffp-contract=off; nvcc fuses unless told not to).
LOOM_HOST_DEVICE inline double SquareUnfused(double v) {
#ifdef __CUDA_ARCH__
  return __dmul_rn(v, v);
#else
  return v * v;
#endif
}

// The sum of load(i)² for i in [begin, stop) (at most one block), in double: lanes as above,
// then lane l += lane l + w for w = 4, 2, 1. The same bits wherever it runs.
template <typename Load>
LOOM_HOST_DEVICE inline double SumOfSquaresOfBlock(int64_t begin, int64_t stop, Load load) {
  double lane[kSumOfSquaresLanes] = {};
  int64_t i = begin;
  for (; i + kSumOfSquaresLanes <= stop; i += kSumOfSquaresLanes) {
    for (int l = 0; l < kSumOfSquaresLanes; ++l) lane[l] += SquareUnfused(load(i + l));
  }
  for (int l = 0; i + l < stop; ++l) lane[l] += SquareUnfused(load(i + l));
  for (int width = kSumOfSquaresLanes / 2; width >= 1; width /= 2) {
    for (int l = 0; l < width; ++l) lane[l] += lane[l + width];
  }
  return lane[0];
}

}  // namespace loom::runtime::kernels
