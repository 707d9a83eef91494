// The steady clock in microseconds since its epoch: one clock for every process of a host, so
// timestamps from different ranks (pipeline traces, communication completion) line up.
#pragma once

#include <chrono>
#include <cstdint>

namespace loom::runtime {

inline int64_t SteadyMicros() {
  return std::chrono::duration_cast<std::chrono::microseconds>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

}  // namespace loom::runtime
