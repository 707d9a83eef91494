// GEMM provider: OpenBLAS (`-DLOOM_GEMM=openblas`), single-threaded sgemm. Debian's build has no
// bf16 GEMM, so bf16 operands are widened to f32 by the caller.
#include <cblas.h>

#include <string>

#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"
#include "runtime/base/check.h"
#include "runtime/kernels/cpu/gemm.h"

namespace loom::runtime::kernels::cpu {

void Sgemm(const GemmShape& s, float alpha, const float* a, const float* b, float beta, float* c) {
  cblas_sgemm(CblasRowMajor, s.trans_a ? CblasTrans : CblasNoTrans,
              s.trans_b ? CblasTrans : CblasNoTrans, static_cast<int>(s.m), static_cast<int>(s.n),
              static_cast<int>(s.k), alpha, a, static_cast<int>(s.lda), b, static_cast<int>(s.ldb),
              beta, c, static_cast<int>(s.ldc));
}

bool GemmBf16Available() { return false; }

void GemmBf16(const GemmShape&, float, const uint16_t*, const uint16_t*, float, float*) {
  LOOM_CHECK(false) << "the openblas GEMM provider has no bf16 GEMM";
}

absl::string_view GemmProviderName() {
  static const std::string* name = new std::string(
      absl::StrCat("openblas (", absl::StripAsciiWhitespace(OPENBLAS_VERSION), ")"));
  return *name;
}

}  // namespace loom::runtime::kernels::cpu
