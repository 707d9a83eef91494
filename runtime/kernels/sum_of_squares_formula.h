// The blocking of SumOfSquares, shared by the CPU kernel and its CUDA twin so both add in the same
// order: each block of kSumOfSquaresBlock elements in index order (in double), then the block sums
// in order. C++17 and free of loom headers beyond host_device.h, for device code.
#pragma once

#include <cstdint>

#include "runtime/host_device.h"

namespace loom::runtime::kernels {

inline constexpr int64_t kSumOfSquaresBlock = 4096;

LOOM_HOST_DEVICE inline int64_t SumOfSquaresBlocks(int64_t n) {
  return (n + kSumOfSquaresBlock - 1) / kSumOfSquaresBlock;
}

}  // namespace loom::runtime::kernels
