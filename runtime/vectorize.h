// LOOM_VECTORIZED: a loop function compiled three times (x86-64-v4: AVX-512, x86-64-v3: AVX2 + FMA,
// and baseline x86-64), the best one for the CPU picked when the program loads (GCC's
// target_clones). The build stays portable across machines while the hot element-wise loops run
// at the width the CPU has.
//
//   LOOM_VECTORIZED void GeluRows(const float* x, float* out, int64_t n) { ... }
//
// Results are the same bits on every clone: the project compiles with -ffp-contract=off (ISO C++,
// no FMA contraction) and reductions use fixed lanes (kernels/cpu/fast_math.h LaneSum), so vector
// width never changes the order of operations.
#pragma once

// Not under ThreadSanitizer: the clones' ifunc resolvers run while the dynamic loader relocates
// the program, before TSan's runtime is up, and TSan's instrumentation of them crashes there.
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) && !defined(__SANITIZE_THREAD__)
#define LOOM_VECTORIZED \
  __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define LOOM_VECTORIZED
#endif
