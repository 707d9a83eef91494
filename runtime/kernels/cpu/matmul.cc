// CPU GEMM: OpenBLAS sgemm, with 16-bit operands widened to f32 first.
#include <cblas.h>

#include "runtime/kernels/cpu/cpu_kernels.h"

namespace loom::runtime::kernels::cpu {
namespace {

// An f32 view of `t`: the tensor itself when it is f32, else a widened workspace copy.
Tensor AsF32(const Tensor& t) {
  if (t.dtype() == DType::kF32) return t;
  Tensor w = Tensor::Empty(t.shape(), DType::kF32, MemoryTag::kWorkspace);
  ConvertBuffer(t.raw_data(), t.dtype(), w.raw_data(), DType::kF32, t.numel());
  return w;
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
  const int lda = static_cast<int>(options.trans_a ? m : k);
  const int ldb = static_cast<int>(options.trans_b ? k : n);
  if (k == 0) {
    // BLAS may leave `out` untouched when k == 0; the product is zero, so out = beta · out.
    float* o = out32.data<float>();
    for (int64_t i = 0; i < m * n; ++i) o[i] = options.beta == 0.0f ? 0.0f : options.beta * o[i];
  } else {
    cblas_sgemm(CblasRowMajor, options.trans_a ? CblasTrans : CblasNoTrans,
                options.trans_b ? CblasTrans : CblasNoTrans, static_cast<int>(m),
                static_cast<int>(n), static_cast<int>(k), options.alpha, a32.data<float>(), lda,
                b32.data<float>(), ldb, options.beta, out32.data<float>(), static_cast<int>(n));
  }
  if (out.dtype() != DType::kF32) {
    ConvertBuffer(out32.raw_data(), DType::kF32, out.raw_data(), out.dtype(), out.numel());
  }
}

}  // namespace loom::runtime::kernels::cpu
