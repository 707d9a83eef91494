// The GEMM provider: the one library loom's CPU kernels multiply matrices with, chosen at configure
// time (`-DLOOM_GEMM=onednn|openblas`, default onednn; bench/runtime/gemm_libs_bench.cc measures
// the candidates, docs/kernels.md gives the figures). One file per provider: gemm_<name>.cc.
//
//   // c[m, n] = alpha · op(a) · op(b) + beta · c, row-major, one thread:
//   cpu::Sgemm({.trans_b = true, .m = 2048, .n = 1152, .k = 384, .lda = 384, .ldb = 384,
//               .ldc = 1152}, 1.0f, x, w, 0.0f, y);
//   if (cpu::GemmBf16Available()) cpu::GemmBf16(shape, 1.0f, x16, w16, 0.0f, y);
//
// Every call runs on the calling thread only: loom splits a product across its own threads
// (kernels/cpu/matmul.cc, attention.cc), so the provider never adds threads of its own.
#pragma once

#include <cstdint>

#include "absl/strings/string_view.h"

namespace loom::runtime::kernels::cpu {

// A row-major product c[m, n] = op(a)[m, k] · op(b)[k, n] with leading dimensions (elements
// between rows as stored: a is [m, lda] or, transposed, [k, lda]).
struct GemmShape {
  bool trans_a = false;
  bool trans_b = false;
  int64_t m = 0, n = 0, k = 0;
  int64_t lda = 0, ldb = 0, ldc = 0;
};

// f32 operands and output; k >= 1.
void Sgemm(const GemmShape& s, float alpha, const float* a, const float* b, float beta, float* c);

// Whether GemmBf16 exists in this provider and runs faster than widening to f32 and calling
// Sgemm on this CPU (decided once, at first use, from the CPU's features; LOOM_BF16_GEMM=native or
// =f32 overrides; the decision is logged once).
bool GemmBf16Available();
// bf16 operands (raw bits), f32 accumulation and output; only when GemmBf16Available().
void GemmBf16(const GemmShape& s, float alpha, const uint16_t* a, const uint16_t* b, float beta,
              float* c);

// GemmBf16 where GemmBf16Available(); else GemmBf16Widened. For bf16 operands inside larger
// tensors (attention's heads), which cannot be widened whole first as kernels/matmul.cc does.
void GemmBf16OrWidened(const GemmShape& s, float alpha, const uint16_t* a, const uint16_t* b,
                       float beta, float* c);
// The same product by Sgemm on f32 copies of op(a) and op(b) (the same values: only the order of
// the f32 sums can differ from GemmBf16). Provider-independent (gemm_widened.cc).
void GemmBf16Widened(const GemmShape& s, float alpha, const uint16_t* a, const uint16_t* b,
                     float beta, float* c);

// "onednn 2.6.3 (avx512_core_bf16)", "openblas 0.3.21": for logs and benchmark records.
absl::string_view GemmProviderName();

}  // namespace loom::runtime::kernels::cpu
