// The CUDA twins of the CPU kernels (runtime/kernels/cpu/cpu_kernels.h), on raw device pointers
// and a stream (nullptr: the default stream); asynchronous, like any kernel launch: errors surface
// through cuda::LastError or the next synchronising call. RegisterKernels() puts them behind the
// kernel entry points (runtime/kernels/cuda_twins.h), which then run them for device tensors on
// the default stream. tests/runtime/cuda/cuda_kernels_test.cc checks each against its CPU twin
// (docs/gpu.md). f32, with the CPU kernels' conventions: backward outputs accumulate.
#pragma once

#include <cstddef>
#include <cstdint>

#include "runtime/kernels/adamw_formula.h"
#include "runtime/kernels/column_sum_formula.h"
#include "runtime/kernels/cuda/multi_tensor.h"
#include "runtime/kernels/fp8_formula.h"
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
// accumulate false: dx = gelu'(x) · dout, its previous contents ignored.
void GeluBackward(const float* dout, const float* x, float* dx, int64_t n, Stream stream,
                  bool accumulate = true);
void GeluBackwardBf16(const float* dout, const uint16_t* x, float* dx, int64_t n, Stream stream,
                      bool accumulate = true);
// AdamW on n elements with the step's constants (runtime/kernels/adamw_formula.h: the CPU kernel's
// bits); `copy_bf16`, if not null, receives the updated master rounded to bf16 (nearest even).
struct AdamWArgs {
  float *master, *m, *v;
  const float* grad;
  uint16_t* copy_bf16;
};
void AdamWUpdate(const AdamWArgs& args, const AdamWStep& step, int64_t n, Stream stream);
// AdamW over many tensors in one launch (the tables of multi_tensor.h, passed by value): block b
// updates chunk chunk_index[b] of slot chunk_slot[b] with `step`, its decay factor that slot's.
struct AdamWManyArgs {
  float* master[kMaxLaunchTensors];
  const float* grad[kMaxLaunchTensors];
  float* m[kMaxLaunchTensors];
  float* v[kMaxLaunchTensors];
  int64_t n[kMaxLaunchTensors];
  float decay[kMaxLaunchTensors];
  uint8_t chunk_slot[kMaxLaunchChunks];
  int32_t chunk_index[kMaxLaunchChunks];
  int chunks;
};
static_assert(sizeof(AdamWManyArgs) + sizeof(AdamWStep) <= 4000,
              "a kernel's arguments must fit in 4 KiB");
void AdamWUpdateMany(const AdamWManyArgs& args, const AdamWStep& step, Stream stream);
// SGD with momentum on n elements (the CPU kernel's SgdElement).
void SgdUpdate(float* param, const float* grad, float* buffer, const SgdStep& step, int64_t n,
               Stream stream);

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
  // Row strides of a, b and out in elements (0: packed), and a batch of `batch` products, each
  // operand `stride_*` elements after the previous product's (gemm_layout.h's RowMajorGemm).
  int64_t lda = 0, ldb = 0, ldc = 0;
  int64_t batch = 1, stride_a = 0, stride_b = 0, stride_out = 0;
  // f32 [n] added to every row of out (f32, one product): cuBLASLt's bias epilogue, or BiasAdd
  // after the product where its heuristic offers no algorithm with it.
  const float* bias = nullptr;
};
void Gemm(const GemmArgs& args, Stream stream);

// FP8 (runtime/kernels/fp8.h, the layouts there): x f32 or bf16 [rows, cols] to e4m3 `q` and f32
// `scales` (fp8.cu; the per-tensor form takes one f32 of device scratch for the maximum); the
// e4m3 GEMM out[m, n] = (a · scale_a) · (b · scale_b)ᵀ on cuBLASLt, a [m, k] and b [n, k]
// K-contiguous, per-tensor scales or a 1 x 128 with b 128 x 128 (gemm.cc).
struct Fp8QuantizeArgs {
  const void* x;
  bool bf16 = false;
  int64_t rows = 0, cols = 0;
  Fp8Blocks blocks = Fp8Blocks::kTensor;
  uint8_t* q = nullptr;
  float* scales = nullptr;
  int64_t scale_elements = 0;  // the whole scales tensor (the 128 x 128 layout's padding included)
  float* amax = nullptr;       // kTensor: one f32 of scratch
};
void QuantizeFp8(const Fp8QuantizeArgs& args, Stream stream);
struct Fp8GemmArgs {
  const void* a;
  const float* scale_a;
  const void* b;
  const float* scale_b;
  void* out;
  ElemType out_type = ElemType::kF32;
  int64_t m = 0, n = 0, k = 0;
  Fp8Blocks a_blocks = Fp8Blocks::kTensor, b_blocks = Fp8Blocks::kTensor;
};
void Fp8Gemm(const Fp8GemmArgs& args, Stream stream);

// LayerNorm over rows of `cols` (the CPU's LayerNormForward / LayerNormBackward; norm.cu):
// out = (x - mean) · rstd · w + b, saving mean and rstd per row; backward adds into dx, dw, db
// (dw and db in the blocking of column_sum_formula.h, rows of a chunk in parallel).
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
  float* partial = nullptr;  // [ColumnSumChunks(rows), cols] scratch for dw and db
};
void LayerNormBackward(const LayerNormGradArgs& args, Stream stream);
// RMSNorm (the CPU's RMSNormForward / RMSNormBackward; norm.cu): out = x · rstd · w, the same
// arguments with b, mean and db unused (nullptr).
void RMSNormForward(const LayerNormArgs& args, float eps, Stream stream);
void RMSNormBackward(const LayerNormGradArgs& args, Stream stream);
// out = silu(gate) · up; dgate += dout · up · silu'(gate), dup += dout · silu(gate).
void SwiGLUForward(const float* gate, const float* up, float* out, int64_t n, Stream stream);
void SwiGLUBackward(const float* dout, const float* gate, const float* up, float* dgate, float* dup,
                    int64_t n, Stream stream);

// Σ x² in double in the CPU's order (sum_of_squares_formula.h): each block of
// kSumOfSquaresBlock elements summed in index order, then the block sums in order, so the result
// is bitwise the CPU's SumOfSquares. `partial` holds SumOfSquaresBlocks(n) doubles and `total`
// one, both device memory; *total holds the result once the stream gets there.
void SumOfSquares(const void* x, ElemType type, int64_t n, double* partial, double* total,
                  Stream stream);

// x *= factor.
void Scale(float* x, float factor, int64_t n, Stream stream);
// dst = src converted (ConvertBuffer's rounding: nearest even); one side f32.
void Convert(const void* src, ElemType from, void* dst, ElemType to, int64_t n, Stream stream);
// Each f32 element rounded to the nearest value of `type` (bf16 or f16), kept in f32.
void RoundTo(float* x, ElemType type, int64_t n, Stream stream);
// Over rows of `cols`: x += bias; x += bias then out = gelu(x); dbias += Σ_rows dout (the
// CPU's blocking, column_sum_formula.h: bitwise its sums; `partial` is [ColumnSumChunks(rows),
// cols] scratch).
void BiasAdd(float* x, const float* bias, int64_t rows, int64_t cols, Stream stream);
void BiasGeluForward(float* x, const float* bias, float* out, int64_t rows, int64_t cols,
                     Stream stream);
void BiasBackward(const float* dout, float* dbias, int64_t rows, int64_t cols, float* partial,
                  Stream stream);
// Bad input found on the device is recorded, not fatal there: `record` (device, 4 int64) becomes
// {what, position, value, limit} for the first id outside [0, limit) when record[0] was 0.
void CheckIndices(const int32_t* ids, int64_t n, int64_t limit, int64_t what, int64_t* record,
                  Stream stream);

// Embedding rows (the CPU's EmbeddingForward / EmbeddingBackward, embedding.cu): out[i] =
// table[ids[i] - vocab_start] where that row is in the table, else zeros; backward adds dout[i]
// into that row: positions sorted by row, each row's run summed by one block in position order
// (bitwise the CPU's sums), in device scratch of EmbeddingBackwardScratchBytes.
struct EmbeddingArgs {
  const int32_t* ids;
  int64_t n = 0, cols = 0, table_rows = 0, vocab_start = 0;
};
void EmbeddingForward(const EmbeddingArgs& args, const float* table, float* out, Stream stream);
size_t EmbeddingBackwardScratchBytes(const EmbeddingArgs& args);
void EmbeddingBackward(const EmbeddingArgs& args, const float* dout, float* dtable, void* scratch,
                       Stream stream);

// Softmax cross-entropy pieces over rows of `vocab` logits (the CPU's CrossEntropy*,
// cross_entropy.cu), one block per row for the statistics (fixed reduction order).
struct CrossEntropyArgs {
  const float* logits;
  const int32_t* targets;
  int64_t rows = 0, vocab = 0, vocab_start = 0;
};
void CrossEntropyStats(const CrossEntropyArgs& args, float* row_max, float* sum_exp,
                       float* target_logit, Stream stream);
void CrossEntropyRescale(const float* local_max, const float* global_max, float* sum_exp,
                         int64_t rows, Stream stream);
void CrossEntropyLoss(const float* row_max, const float* sum_exp, const float* target_logit,
                      float* losses, int64_t rows, Stream stream);
void CrossEntropyBackward(const CrossEntropyArgs& args, const float* row_max, const float* sum_exp,
                          const float* dloss, float* dlogits, Stream stream);

// Causal attention over a fused qkv [B, T, 3C] (the CPU's AttentionForward / AttentionBackward,
// attention.cu): f32, or bf16 qkv and probs (`bf16`) with the CPU's rounding points. One block per
// (batch, head, query row); backward writes dS into `dscores` ([B, NH, T, T] f32 scratch) and
// accumulates into dqkv, each element from one thread (no atomics).
struct AttentionArgs {
  const void* qkv;
  int64_t batch = 0, seq = 0, channels = 0, heads = 0;
  bool bf16 = false;
};
void AttentionForward(const AttentionArgs& args, float* out, void* probs, Stream stream);
void AttentionBackward(const AttentionArgs& args, const float* dout, const void* probs,
                       float* dscores, float* dqkv, Stream stream);
// The same on cuBLASLt (the default; attention.cu): per batch element, the heads' scores
// S = scale · Q·Kᵀ as one batched GEMM reading q and k in place in qkv, a causal softmax kernel,
// and P·V as another, written into out at each head's columns; backward dP = dO·Vᵀ, dV += Pᵀ·dO,
// the softmax backward kernel, dQ += dS·K, dK += dSᵀ·Q. Full T x T products (the masked half
// is computed and ignored), f32 accumulation, the CPU's bf16 rounding points. Scratch on the
// device: `scores` [NH, T, T] f32 for bf16 forward (f32 writes the scores into probs); backward
// `dscores` [NH, T, T] f32, and for bf16 `ds16` [NH, T, T] and `dout16` [B, T, C] bf16.
struct AttentionGemmScratch {
  float* dscores = nullptr;
  void* ds16 = nullptr;
  void* dout16 = nullptr;
};
void AttentionForwardGemm(const AttentionArgs& args, float* out, void* probs, float* scores,
                          Stream stream);
void AttentionBackwardGemm(const AttentionArgs& args, const float* dout, const void* probs,
                           const AttentionGemmScratch& scratch, float* dqkv, Stream stream);

// Mixture of experts (the CPU's MoePermute / MoeCombine / MoeCombineBackward and FP8 rows,
// runtime/kernels/moe.h; moe.cu): `tokens` rows of `cols`, each with k slots whose permuted row
// is row_of[t · k + i] (-1: dropped). Combine sums a token's slots in order; its backward
// overwrites dy's slot rows and dgates (a block sum per slot). FP8 rows: [rows, width] bytes,
// width = Fp8RowWidth(cols), the e4m3 values then the blocks' f32 scales.
struct MoeRowsArgs {
  const int32_t* row_of;
  int64_t tokens = 0, k = 0, cols = 0;
};
void MoePermute(const MoeRowsArgs& args, const float* x, float* out, Stream stream);
void MoeCombine(const MoeRowsArgs& args, const float* y, const float* gates, float* out,
                Stream stream);
void MoeCombineBackward(const MoeRowsArgs& args, const float* dout, const float* y,
                        const float* gates, float* dy, float* dgates, Stream stream);
struct Fp8RowsArgs {
  int64_t rows = 0, cols = 0, width = 0;
};
void QuantizeRowsFp8(const Fp8RowsArgs& args, const float* x, uint8_t* packed, Stream stream);
void DequantizeRowsFp8(const Fp8RowsArgs& args, const uint8_t* packed, float* x, Stream stream);

// The flash form (runtime/kernels/attention.h FlashAttentionForward; flash_attention.cu): out
// and each row's log-sum-exp lse [B, NH, T]; backward adds into dqkv, with `delta` [B, NH, T] f32
// scratch. Head sizes 16, 32 and 64 (FlashAttentionSupports).
bool FlashAttentionSupports(int64_t head_dim);
void FlashAttentionForward(const AttentionArgs& args, float* out, float* lse, Stream stream);
void FlashAttentionBackward(const AttentionArgs& args, const float* dout, const float* out,
                            const float* lse, float* delta, float* dqkv, Stream stream);

// Tests only: one thread busy for about `cycles` clock cycles, to hold a stream back.
void SpinForTesting(int64_t cycles, Stream stream);

}  // namespace loom::runtime::kernels::cuda
