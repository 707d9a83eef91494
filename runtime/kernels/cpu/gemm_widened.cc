// bf16 products through the f32 GEMM, for CPUs (or providers) without a faster bf16 one.
#include <vector>

#include "runtime/dtype.h"
#include "runtime/kernels/cpu/gemm.h"

namespace loom::runtime::kernels::cpu {
namespace {

// The rows × cols block stored at `src` with leading dimension `ld`, widened and packed.
std::vector<float> Widened(const uint16_t* src, int64_t rows, int64_t cols, int64_t ld) {
  std::vector<float> out(static_cast<size_t>(rows * cols));
  for (int64_t r = 0; r < rows; ++r) {
    ConvertBuffer(src + r * ld, DType::kBF16, out.data() + r * cols, DType::kF32, cols);
  }
  return out;
}

}  // namespace

void GemmBf16Widened(const GemmShape& s, float alpha, const uint16_t* a, const uint16_t* b,
                     float beta, float* c) {
  GemmShape packed = s;
  packed.lda = s.trans_a ? s.m : s.k;  // a is stored [m, k], or [k, m] transposed
  packed.ldb = s.trans_b ? s.k : s.n;
  const std::vector<float> wa = Widened(a, s.trans_a ? s.k : s.m, packed.lda, s.lda);
  const std::vector<float> wb = Widened(b, s.trans_b ? s.n : s.k, packed.ldb, s.ldb);
  Sgemm(packed, alpha, wa.data(), wb.data(), beta, c);
}

void GemmBf16OrWidened(const GemmShape& s, float alpha, const uint16_t* a, const uint16_t* b,
                       float beta, float* c) {
  if (GemmBf16Available()) {
    GemmBf16(s, alpha, a, b, beta, c);
  } else {
    GemmBf16Widened(s, alpha, a, b, beta, c);
  }
}

}  // namespace loom::runtime::kernels::cpu
