// CPU GEMM through the configured provider (kernels/cpu/gemm.h), split across loom's threads.
// bf16 operands go to the provider's bf16 GEMM where the CPU runs it faster than f32, and are
// widened to f32 otherwise; f16 operands are always widened.
#include "runtime/kernels/cpu/cpu_kernels.h"
#include "runtime/kernels/cpu/gemm.h"
#include "runtime/parallel.h"

namespace loom::runtime::kernels::cpu {
namespace {

// An f32 view of `t`: the tensor itself when it is f32, else a widened workspace copy.
Tensor AsF32(const Tensor& t) {
  if (t.dtype() == DType::kF32) return t;
  Tensor w = Tensor::Empty(t.shape(), DType::kF32, MemoryTag::kWorkspace, &Allocator::Default());
  ConvertBuffer(t.raw_data(), t.dtype(), w.raw_data(), DType::kF32, t.numel());
  return w;
}

// Calls gemm(part, a_offset, b_offset, c_offset) for one block of the product per ParallelFor
// chunk of M (or of N when M is small; offsets in elements), so every output element is computed
// by exactly one single-threaded call whatever the thread count, and loom's threads are the only
// ones.
template <typename Gemm>
void SplitAcrossThreads(const GemmShape& s, Gemm gemm) {
  constexpr int64_t kMinChunk = 64;  // rows or columns per call, so the GEMM kernels stay efficient
  if (s.m >= s.n || s.m >= NumThreads() * 4 * kMinChunk) {
    ParallelFor(s.m, kMinChunk, [&](int64_t r0, int64_t r1) {
      GemmShape part = s;
      part.m = r1 - r0;
      gemm(part, s.trans_a ? r0 : r0 * s.lda, int64_t{0}, r0 * s.ldc);
    });
  } else {
    ParallelFor(s.n, kMinChunk, [&](int64_t c0, int64_t c1) {
      GemmShape part = s;
      part.n = c1 - c0;
      gemm(part, int64_t{0}, s.trans_b ? c0 * s.ldb : c0, c0);
    });
  }
}

}  // namespace

void Matmul(const Tensor& a, const Tensor& b, Tensor& out, int64_t m, int64_t n, int64_t k,
            const MatmulOptions& options) {
  if (m == 0 || n == 0) return;
  // A 16-bit `out` is computed in f32 (reading it first when beta != 0) and rounded once.
  Tensor out32 =
      out.dtype() == DType::kF32 ? out
      : options.beta != 0.0f
          ? AsF32(out)
          : Tensor::Empty(out.shape(), DType::kF32, MemoryTag::kWorkspace, &Allocator::Default());
  const GemmShape shape{.trans_a = options.trans_a,
                        .trans_b = options.trans_b,
                        .m = m,
                        .n = n,
                        .k = k,
                        .lda = options.trans_a ? m : k,
                        .ldb = options.trans_b ? k : n,
                        .ldc = n};
  const float alpha = options.alpha, beta = options.beta;
  float* c = out32.data<float>();
  if (k == 0) {
    // The product is zero, so out = beta · out (a GEMM library may leave `out` untouched).
    for (int64_t i = 0; i < m * n; ++i) c[i] = beta == 0.0f ? 0.0f : beta * c[i];
  } else if (a.dtype() == DType::kBF16 && GemmBf16Available()) {
    const auto* pa = static_cast<const uint16_t*>(a.raw_data());
    const auto* pb = static_cast<const uint16_t*>(b.raw_data());
    SplitAcrossThreads(shape, [&](const GemmShape& part, int64_t ao, int64_t bo, int64_t co) {
      GemmBf16(part, alpha, pa + ao, pb + bo, beta, c + co);
    });
  } else {
    const Tensor a32 = AsF32(a);
    const Tensor b32 = AsF32(b);
    const float* pa = a32.data<float>();
    const float* pb = b32.data<float>();
    SplitAcrossThreads(shape, [&](const GemmShape& part, int64_t ao, int64_t bo, int64_t co) {
      Sgemm(part, alpha, pa + ao, pb + bo, beta, c + co);
    });
  }
  if (out.dtype() != DType::kF32) {
    ConvertBuffer(out32.raw_data(), DType::kF32, out.raw_data(), out.dtype(), out.numel());
  }
}

}  // namespace loom::runtime::kernels::cpu
