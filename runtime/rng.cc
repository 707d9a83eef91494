#include "runtime/rng.h"

#include <cmath>

#include "runtime/parallel.h"

namespace loom::runtime {
namespace {

constexpr uint32_t kPhiloxM0 = 0xD2511F53u;
constexpr uint32_t kPhiloxM1 = 0xCD9E8D57u;
constexpr uint32_t kPhiloxW0 = 0x9E3779B9u;
constexpr uint32_t kPhiloxW1 = 0xBB67AE85u;

// Uniform in [0, 1) from the top 24 bits (exactly representable in f32).
float UnitFloat(uint32_t bits) { return static_cast<float>(bits >> 8) * (1.0f / 16777216.0f); }

template <typename F>
void FillElements(Tensor& out, uint64_t seed, absl::string_view name, int64_t offset, F value) {
  float* p = out.data<float>();
  const uint64_t name_hash = Fnv1a64(name);
  ParallelFor(out.numel(), 4096, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      p[i] = value(RandomBits(seed, name_hash, static_cast<uint64_t>(offset + i)));
    }
  });
}

}  // namespace

PhiloxCounter Philox4x32(PhiloxCounter c, PhiloxKey k) {
  for (int round = 0; round < 10; ++round) {
    const uint64_t p0 = static_cast<uint64_t>(kPhiloxM0) * c[0];
    const uint64_t p1 = static_cast<uint64_t>(kPhiloxM1) * c[2];
    c = {static_cast<uint32_t>(p1 >> 32) ^ c[1] ^ k[0], static_cast<uint32_t>(p1),
         static_cast<uint32_t>(p0 >> 32) ^ c[3] ^ k[1], static_cast<uint32_t>(p0)};
    k = {k[0] + kPhiloxW0, k[1] + kPhiloxW1};
  }
  return c;
}

uint64_t Fnv1a64(absl::string_view s) {
  uint64_t h = 0xCBF29CE484222325ull;
  for (unsigned char ch : s) {
    h ^= ch;
    h *= 0x100000001B3ull;
  }
  return h;
}

PhiloxCounter RandomBits(uint64_t seed, uint64_t name_hash, uint64_t index) {
  return Philox4x32({static_cast<uint32_t>(index), static_cast<uint32_t>(index >> 32),
                     static_cast<uint32_t>(name_hash), static_cast<uint32_t>(name_hash >> 32)},
                    {static_cast<uint32_t>(seed), static_cast<uint32_t>(seed >> 32)});
}

void FillUniform(Tensor& out, uint64_t seed, absl::string_view name, int64_t offset, float lo,
                 float hi) {
  FillElements(out, seed, name, offset, [&](const PhiloxCounter& r) {
    // lo + (hi - lo)·u can round up to hi in f32; keep the promise of a half-open range.
    const float v = lo + (hi - lo) * UnitFloat(r[0]);
    return v < hi ? v : std::nextafter(hi, lo);
  });
}

void FillNormal(Tensor& out, uint64_t seed, absl::string_view name, int64_t offset, float mean,
                float stddev) {
  FillElements(out, seed, name, offset, [&](const PhiloxCounter& r) {
    const float u1 = 1.0f - UnitFloat(r[0]);  // (0, 1]: log is finite
    const float u2 = UnitFloat(r[1]);
    const float z = std::sqrt(-2.0f * std::log(u1)) * std::cos(6.28318530718f * u2);
    return mean + stddev * z;
  });
}

}  // namespace loom::runtime
