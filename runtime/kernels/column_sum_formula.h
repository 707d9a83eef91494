// The blocking of column sums over many rows (a bias's gradient), shared by the CPU kernel and its
// CUDA twin so both add in the same order: the rows in chunks of kColumnSumRows, each chunk
// summed in row order from zero, then the chunks' sums added in order to the destination. (On a
// GPU the chunks run in parallel; one thread per column over every row left most of it idle.)
// C++17 and free of loom headers beyond host_device.h, for device code.
#pragma once

#include <cstdint>

#include "runtime/host_device.h"

namespace loom::runtime::kernels {

inline constexpr int64_t kColumnSumRows = 256;

LOOM_HOST_DEVICE inline int64_t ColumnSumChunks(int64_t rows) {
  return (rows + kColumnSumRows - 1) / kColumnSumRows;
}

}  // namespace loom::runtime::kernels
