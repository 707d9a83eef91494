// CPU GEMM: OpenBLAS sgemm, with 16-bit operands widened to f32 first.
#include <cblas.h>

#include "runtime/kernels/cpu/cpu_kernels.h"
#include "runtime/parallel.h"

namespace loom::runtime::kernels::cpu {
namespace {

// An f32 view of `t`: the tensor itself when it is f32, else a widened workspace copy.
Tensor AsF32(const Tensor& t) {
  if (t.dtype() == DType::kF32) return t;
  Tensor w = Tensor::Empty(t.shape(), DType::kF32, MemoryTag::kWorkspace);
  ConvertBuffer(t.raw_data(), t.dtype(), w.raw_data(), DType::kF32, t.numel());
  return w;
}

// One single-threaded cblas_sgemm per ParallelFor chunk of M (or of N when M is small), so every
// output element is computed by exactly one call whatever the thread count, and loom's threads
// are the only ones (OpenBLAS runs single-threaded; see runtime/parallel.h).
void Sgemm(const MatmulOptions& o, int64_t m, int64_t n, int64_t k, const float* a, const float* b,
           float* out) {
  const int64_t lda = o.trans_a ? m : k;
  const int64_t ldb = o.trans_b ? k : n;
  auto call = [&](int64_t rows, int64_t cols, const float* pa, const float* pb, float* pc) {
    cblas_sgemm(CblasRowMajor, o.trans_a ? CblasTrans : CblasNoTrans,
                o.trans_b ? CblasTrans : CblasNoTrans, static_cast<int>(rows),
                static_cast<int>(cols), static_cast<int>(k), o.alpha, pa, static_cast<int>(lda), pb,
                static_cast<int>(ldb), o.beta, pc, static_cast<int>(n));
  };
  constexpr int64_t kMinChunk = 64;  // rows or columns per call, so the BLAS kernels stay efficient
  // Rows split into contiguous blocks of the output; columns only when there are too few rows.
  if (m >= n || m >= NumThreads() * 4 * kMinChunk) {
    ParallelFor(m, kMinChunk, [&](int64_t r0, int64_t r1) {
      call(r1 - r0, n, a + (o.trans_a ? r0 : r0 * lda), b, out + r0 * n);
    });
  } else {
    ParallelFor(n, kMinChunk, [&](int64_t c0, int64_t c1) {
      call(m, c1 - c0, a, b + (o.trans_b ? c0 * ldb : c0), out + c0);
    });
  }
}

}  // namespace

void Matmul(const Tensor& a, const Tensor& b, Tensor& out, int64_t m, int64_t n, int64_t k,
            const MatmulOptions& options) {
  if (m == 0 || n == 0) return;
  const Tensor a32 = AsF32(a);
  const Tensor b32 = AsF32(b);
  // A 16-bit `out` is computed in f32 (reading it first when beta != 0) and rounded once.
  Tensor out32 = out.dtype() == DType::kF32 ? out
                 : options.beta != 0.0f
                     ? AsF32(out)
                     : Tensor::Empty(out.shape(), DType::kF32, MemoryTag::kWorkspace);
  if (k == 0) {
    // BLAS may leave `out` untouched when k == 0; the product is zero, so out = beta · out.
    float* o = out32.data<float>();
    for (int64_t i = 0; i < m * n; ++i) o[i] = options.beta == 0.0f ? 0.0f : options.beta * o[i];
  } else {
    Sgemm(options, m, n, k, a32.data<float>(), b32.data<float>(), out32.data<float>());
  }
  if (out.dtype() != DType::kF32) {
    ConvertBuffer(out32.raw_data(), DType::kF32, out.raw_data(), out.dtype(), out.numel());
  }
}

}  // namespace loom::runtime::kernels::cpu
