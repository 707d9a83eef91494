#include <vector>

#include "runtime/kernels/cpu/cpu_kernels.h"
#include "runtime/kernels/sum_of_squares_formula.h"
#include "runtime/parallel.h"
#include "runtime/vectorize.h"

namespace loom::runtime::kernels::cpu {
namespace {

constexpr int64_t kGrain = 16384;

// SumOfSquaresOfBlock over f32 values, compiled for the CPU's vector width.
LOOM_VECTORIZED double SquaresOfF32Block(const float* p, int64_t begin, int64_t stop) {
  return SumOfSquaresOfBlock(begin, stop, [p](int64_t i) { return static_cast<double>(p[i]); });
}

// The blocks' sums in order; `block(begin, stop)` sums one block.
template <typename Block>
double BlockedSumOfSquares(int64_t n, Block block) {
  const int64_t blocks = SumOfSquaresBlocks(n);
  std::vector<double> partial(static_cast<size_t>(blocks));
  ParallelFor(blocks, 16, [&](int64_t begin, int64_t end) {
    for (int64_t blk = begin; blk < end; ++blk) {
      partial[blk] = block(blk * kSumOfSquaresBlock, std::min(n, (blk + 1) * kSumOfSquaresBlock));
    }
  });
  double total = 0.0;
  for (double s : partial) total += s;
  return total;
}

LOOM_VECTORIZED void AddSpan(const float* a, const float* b, float* out, int64_t n) {
  for (int64_t i = 0; i < n; ++i) out[i] = a[i] + b[i];
}

LOOM_VECTORIZED void ScaleSpan(float* x, float factor, int64_t n) {
  for (int64_t i = 0; i < n; ++i) x[i] *= factor;
}

}  // namespace

void Add(const Tensor& a, const Tensor& b, Tensor& out) {
  const float* pa = a.data<float>();
  const float* pb = b.data<float>();
  float* po = out.data<float>();
  ParallelFor(a.numel(), kGrain, [&](int64_t begin, int64_t end) {
    AddSpan(pa + begin, pb + begin, po + begin, end - begin);
  });
}

void Scale(Tensor& x, float factor) {
  float* px = x.data<float>();
  ParallelFor(x.numel(), kGrain,
              [&](int64_t begin, int64_t end) { ScaleSpan(px + begin, factor, end - begin); });
}

double SumOfSquares(const Tensor& x) {
  if (x.dtype() == DType::kF32) {
    const float* p = x.data<float>();
    return BlockedSumOfSquares(
        x.numel(), [p](int64_t begin, int64_t stop) { return SquaresOfF32Block(p, begin, stop); });
  }
  // 16-bit values: each block widened (exactly) into f32 first.
  const char* p = static_cast<const char*>(x.raw_data());
  const DType dt = x.dtype();
  const size_t size = DTypeSize(dt);
  return BlockedSumOfSquares(x.numel(), [p, dt, size](int64_t begin, int64_t stop) {
    float wide[kSumOfSquaresBlock];
    ConvertBuffer(p + begin * size, dt, wide, DType::kF32, stop - begin);
    return SquaresOfF32Block(wide, 0, stop - begin);
  });
}

}  // namespace loom::runtime::kernels::cpu
