// Helpers shared by the point-to-point algorithm and hierarchical tests: typed host buffers filled
// from a function of the element index (values chosen exact in every dtype), element read-back as
// double, and running one body per thread-rank.
//
//   std::vector<char> in = Fill(DType::kBF16, 4099, [&](int64_t i) { return r + i % 7; });
//   double x = At(DType::kBF16, in, 12);
//   OnThreads(4, [&](int r) { ... });
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>
#include <thread>
#include <vector>

#include "runtime/base/logging.h"
#include "runtime/dtype.h"

namespace loom::comm::testing {

// Writes v into element i of a buffer of `dtype` (rounded as the dtype stores it).
inline void Store(runtime::DType dtype, void* data, int64_t i, double v) {
  switch (dtype) {
    case runtime::DType::kI32:
      static_cast<int32_t*>(data)[i] = static_cast<int32_t>(v);
      return;
    case runtime::DType::kI64:
      static_cast<int64_t*>(data)[i] = static_cast<int64_t>(v);
      return;
    default: {
      const float f = static_cast<float>(v);
      runtime::ConvertBuffer(&f, runtime::DType::kF32,
                             static_cast<char*>(data) + i * runtime::DTypeSize(dtype), dtype, 1);
    }
  }
}

inline double At(runtime::DType dtype, const void* data, int64_t i) {
  switch (dtype) {
    case runtime::DType::kI32:
      return static_cast<const int32_t*>(data)[i];
    case runtime::DType::kI64:
      return static_cast<double>(static_cast<const int64_t*>(data)[i]);
    default:
      return runtime::LoadAsF32(data, dtype, i);
  }
}
inline double At(runtime::DType dtype, const std::vector<char>& b, int64_t i) {
  return At(dtype, b.data(), i);
}

// v as `dtype` stores it.
inline double Rounded(runtime::DType dtype, double v) {
  char slot[8];
  Store(dtype, slot, 0, v);
  return At(dtype, slot, 0);
}

template <typename F>
std::vector<char> Fill(runtime::DType dtype, int64_t n, F f) {
  std::vector<char> b(static_cast<size_t>(n) * runtime::DTypeSize(dtype));
  for (int64_t i = 0; i < n; ++i) Store(dtype, b.data(), i, f(i));
  return b;
}

// NaN for floating dtypes (any stale element then fails its comparison), -77 for integers.
inline std::vector<char> Poisoned(runtime::DType dtype, int64_t n) {
  return Fill(dtype, n,
              [&](int64_t) { return runtime::IsFloatingPoint(dtype) ? std::nan("") : -77.0; });
}

// Runs body(rank) on `n` threads and joins them.
template <typename Body>
void OnThreads(int n, Body body) {
  std::vector<std::thread> threads;
  for (int r = 0; r < n; ++r) {
    threads.emplace_back([&body, r] {
      base::SetThreadRank(r);
      body(r);
    });
  }
  for (std::thread& t : threads) t.join();
}

}  // namespace loom::comm::testing
