// The FP8 (e4m3) block scale, shared by the CPU kernels and their CUDA twins: a block whose largest
// magnitude is `amax` is stored as x / scale with scale = amax / 448 (e4m3's largest finite value),
// so its largest element becomes ±448; an all-zero block keeps scale 1. C++17, no CUDA headers.
#pragma once

#include <cstdint>

#include "runtime/host_device.h"

namespace loom::runtime::kernels {

// Elements per FP8 scaling block along a row (and rows per block for 128 x 128 tiles).
inline constexpr int64_t kFp8Block = 128;
inline constexpr float kFp8Max = 448.0f;

// How an FP8 tensor is scaled (layouts in fp8.h): one scale, one per 1 x 128 block of a row, or
// one per 128 x 128 tile.
enum class Fp8Blocks { kTensor, k1x128, k128x128 };

LOOM_HOST_DEVICE inline float Fp8Scale(float amax) { return amax > 0.0f ? amax / kFp8Max : 1.0f; }

}  // namespace loom::runtime::kernels
