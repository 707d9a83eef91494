// The CUDA twins of the CPU kernels (runtime/kernels/cpu/cpu_kernels.h), on raw device pointers
// and a stream (nullptr: the default stream); asynchronous, like any kernel launch: errors surface
// through cuda::LastError or the next synchronising call. RegisterKernels() puts them behind the
// kernel entry points (runtime/kernels/cuda_twins.h), which then run them for device tensors on
// the default stream. tests/runtime/cuda/cuda_kernels_test.cc checks each against its CPU twin
// (docs/gpu.md). f32, with the CPU kernels' conventions: backward outputs accumulate.
#pragma once

#include <cstdint>

#include "runtime/kernels/adamw_formula.h"
#include "runtime/kernels/sum_of_squares_formula.h"

struct CUstream_st;  // cudaStream_t without the CUDA headers

namespace loom::runtime::kernels::cuda {

using Stream = CUstream_st*;

// Fills the entry points' table of CUDA twins with the kernels below (idempotent).
void RegisterKernels();

// out = a + b (out may be a or b).
void Add(const float* a, const float* b, float* out, int64_t n, Stream stream);
// GELU, tanh form (the CPU's GeluForward / GeluBackward): out = gelu(x); dx += gelu'(x) · dout.
void GeluForward(const float* x, float* out, int64_t n, Stream stream);
void GeluBackward(const float* dout, const float* x, float* dx, int64_t n, Stream stream);
// AdamW on n elements with the step's constants (runtime/kernels/adamw_formula.h: the CPU kernel's
// bits); `copy_bf16`, if not null, receives the updated master rounded to bf16 (nearest even).
struct AdamWArgs {
  float *master, *m, *v;
  const float* grad;
  uint16_t* copy_bf16;
};
void AdamWUpdate(const AdamWArgs& args, const AdamWStep& step, int64_t n, Stream stream);

// A row-major GEMM through cuBLASLt (runtime/kernels/cuda/gemm.cc): out[m, n] = alpha · op(a) ·
// op(b) + beta · out, a [m, k] ([k, m] with trans_a), b [k, n] ([n, k] with trans_b), both of
// type `in`; out f32 or `in`. Accumulates in f32 (never TF32), as the CPU's GEMMs do.
enum class ElemType { kF32, kBF16, kF16 };  // floating element types of device buffers
struct GemmArgs {
  const void* a;
  const void* b;
  void* out;
  ElemType in = ElemType::kF32, out_type = ElemType::kF32;
  int64_t m = 0, n = 0, k = 0;
  bool trans_a = false, trans_b = false;
  float alpha = 1.0f, beta = 0.0f;
};
void Gemm(const GemmArgs& args, Stream stream);

// LayerNorm over rows of `cols` (the CPU's LayerNormForward / LayerNormBackward; norm.cu):
// out = (x - mean) · rstd · w + b, saving mean and rstd per row; backward adds into dx, dw, db.
struct LayerNormArgs {
  const float *x, *w, *b;
  float *out, *mean, *rstd;
  int64_t rows = 0, cols = 0;
};
void LayerNormForward(const LayerNormArgs& args, float eps, Stream stream);
struct LayerNormGradArgs {
  const float *dout, *x, *w, *mean, *rstd;
  float *dx, *dw, *db;
  int64_t rows = 0, cols = 0;
};
void LayerNormBackward(const LayerNormGradArgs& args, Stream stream);

// Σ x² in double in the CPU's order (sum_of_squares_formula.h): each block of
// kSumOfSquaresBlock elements summed in index order, then the block sums in order, so the result
// is bitwise the CPU's SumOfSquares. `partial` holds SumOfSquaresBlocks(n) doubles and `total`
// one, both device memory; *total holds the result once the stream gets there.
void SumOfSquares(const void* x, ElemType type, int64_t n, double* partial, double* total,
                  Stream stream);

// Tests only: one thread busy for about `cycles` clock cycles, to hold a stream back.
void SpinForTesting(int64_t cycles, Stream stream);

}  // namespace loom::runtime::kernels::cuda
