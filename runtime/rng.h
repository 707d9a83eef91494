// Counter-based random numbers (Philox4x32-10) for layout-independent initialisation.
//
//   // Elements [a, b) of parameter "h.0.mlp.c_fc.weight", as the whole tensor would have them:
//   Tensor shard = Tensor::Empty({b - a}, DType::kF32, MemoryTag::kParam);
//   FillNormal(shard, /*seed=*/1337, "h.0.mlp.c_fc.weight", /*offset=*/a, 0.0f, 0.02f);
//
// Element i of stream (seed, name) is a pure function of (seed, name, i): one Philox block with
// key = seed and counter = (i, Fnv1a64(name)). So a shard, whatever its layout, gets exactly the
// values the unsharded parameter would have, and fills can run in parallel without shared state.
#pragma once

#include <array>
#include <cstdint>

#include "absl/strings/string_view.h"
#include "runtime/tensor.h"

namespace loom::runtime {

using PhiloxCounter = std::array<uint32_t, 4>;
using PhiloxKey = std::array<uint32_t, 2>;

// Philox4x32 with 10 rounds (Salmon et al., SC'11), as in Random123.
PhiloxCounter Philox4x32(PhiloxCounter counter, PhiloxKey key);

// 64-bit FNV-1a hash of a stream name.
uint64_t Fnv1a64(absl::string_view s);

// The four 32-bit words for element `index` of stream (seed, name_hash).
PhiloxCounter RandomBits(uint64_t seed, uint64_t name_hash, uint64_t index);

// Writes elements [offset, offset + out.numel()) of the stream into `out` (f32, host), uniform in
// [lo, hi) or normal(mean, stddev) (Box-Muller on the element's first two words).
void FillUniform(Tensor& out, uint64_t seed, absl::string_view name, int64_t offset, float lo,
                 float hi);
void FillNormal(Tensor& out, uint64_t seed, absl::string_view name, int64_t offset, float mean,
                float stddev);

}  // namespace loom::runtime
