// f32 <-> bf16 on the bits, shared by the host conversions (runtime/dtype.h F32ToBF16) and CUDA
// kernels that read or write bf16.
#pragma once

#include <cstdint>

#include "runtime/host_device.h"

namespace loom::runtime {

// Round to nearest even on the low 16 bits; overflow carries into Inf as IEEE requires. NaN keeps
// its sign and becomes quiet. Branch-free, so loops over it vectorise.
LOOM_HOST_DEVICE inline uint16_t F32BitsToBF16(uint32_t bits) {
  const uint32_t rounded = (bits + 0x7FFFu + ((bits >> 16) & 1u)) >> 16;
  const uint32_t quiet_nan = (bits >> 16) | 0x0040u;
  return static_cast<uint16_t>((bits & 0x7FFFFFFFu) > 0x7F800000u ? quiet_nan : rounded);
}

// The f32 bits of a bf16 value (exact: bf16 is f32's upper half).
LOOM_HOST_DEVICE inline uint32_t BF16ToF32Bits(uint16_t bits) { return uint32_t{bits} << 16; }

}  // namespace loom::runtime
