// f32 <-> bf16 on the bits, shared by the host conversions (runtime/dtype.h F32ToBF16) and CUDA
// kernels that read or write bf16.
#pragma once

#include <cstdint>
#include <cstring>

#include "runtime/host_device.h"

namespace loom::runtime {

// Round to nearest even on the low 16 bits; overflow carries into Inf as IEEE requires. NaN keeps
// its sign and becomes quiet. Branch-free, so loops over it vectorise.
LOOM_HOST_DEVICE inline uint16_t F32BitsToBF16(uint32_t bits) {
  const uint32_t rounded = (bits + 0x7FFFu + ((bits >> 16) & 1u)) >> 16;
  const uint32_t quiet_nan = (bits >> 16) | 0x0040u;
  return static_cast<uint16_t>((bits & 0x7FFFFFFFu) > 0x7F800000u ? quiet_nan : rounded);
}

// The f32 value of bf16 bits (exact: bf16 is f32's upper half). Branch-free, so loops over it
// vectorise.
LOOM_HOST_DEVICE inline float BF16BitsToF32(uint16_t bits) {
  const uint32_t wide = static_cast<uint32_t>(bits) << 16;
#ifdef __CUDA_ARCH__
  return __uint_as_float(wide);
#else
  float f;
  std::memcpy(&f, &wide, sizeof(f));
  return f;
#endif
}

}  // namespace loom::runtime
