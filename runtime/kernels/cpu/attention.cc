// Causal attention on the CPU, one (batch, head) pair per work item, each product a
// single-threaded GEMM of the configured provider reading q, k, v straight out of the fused qkv
// rows (leading dimension 3C), so no head is ever copied. The products run by blocks of 64 query
// rows (and, in backward, 64 key columns) and skip every block above the diagonal; probs holds
// the full T×T probabilities with zeros above the diagonal.
//
//   qkv[b, t, :] = [q (NH·HS) | k (NH·HS) | v (NH·HS)], head h at offset h·HS within each part.
//
// Each work item writes only its own head's slices of out / dqkv, so there are no races and the
// result does not depend on the thread count.
//
// On bf16 qkv and probs the same products take bf16 operands (f32 accumulation, through
// GemmBf16OrWidened): the probabilities are rounded to bf16 before P·V, dout and dS before the
// products that read them; the softmax and its backward stay f32.
#include <algorithm>
#include <cmath>
#include <type_traits>
#include <vector>

#include "runtime/dtype.h"
#include "runtime/kernels/cpu/cpu_kernels.h"
#include "runtime/kernels/cpu/fast_math.h"
#include "runtime/kernels/cpu/gemm.h"
#include "runtime/kernels/cpu/head_geometry.h"
#include "runtime/parallel.h"
#include "runtime/vectorize.h"

namespace loom::runtime::kernels::cpu {
namespace {

// C[M, N] = alpha · op(A) · op(B) + beta · C, row-major with explicit leading dimensions, on f32
// operands or on bf16 ones (raw bits; f32 accumulation either way).
void Gemm(bool ta, bool tb, int64_t m, int64_t n, int64_t k, float alpha, const float* a,
          int64_t lda, const float* b, int64_t ldb, float beta, float* c, int64_t ldc) {
  Sgemm({.trans_a = ta, .trans_b = tb, .m = m, .n = n, .k = k, .lda = lda, .ldb = ldb, .ldc = ldc},
        alpha, a, b, beta, c);
}
void Gemm(bool ta, bool tb, int64_t m, int64_t n, int64_t k, float alpha, const uint16_t* a,
          int64_t lda, const uint16_t* b, int64_t ldb, float beta, float* c, int64_t ldc) {
  GemmBf16OrWidened(
      {.trans_a = ta, .trans_b = tb, .m = m, .n = n, .k = k, .lda = lda, .ldb = ldb, .ldc = ldc},
      alpha, a, b, beta, c);
}

// The element type of the products' operands: float, or uint16_t holding bf16.
template <typename T>
constexpr bool kBf16 = std::is_same_v<T, uint16_t>;

// f32 rows that end up in `rows` (n elements): `rows` itself in f32; in bf16 a scratch, which
// NarrowInto then rounds into `rows`.
template <typename T>
float* F32Rows(T* rows, std::vector<float>& scratch) {
  if constexpr (kBf16<T>) {
    return scratch.data();
  } else {
    return rows;
  }
}
template <typename T>
void NarrowInto(const float* f32, T* rows, int64_t n) {
  if constexpr (kBf16<T>) ConvertBuffer(f32, DType::kF32, rows, DType::kBF16, n);
}

// `rows` (n elements) as f32: themselves in f32; in bf16 widened into `scratch`.
template <typename T>
const float* WidenedRows(const T* rows, int64_t n, std::vector<float>& scratch) {
  if constexpr (kBf16<T>) {
    ConvertBuffer(rows, DType::kBF16, scratch.data(), DType::kF32, n);
    return scratch.data();
  } else {
    return rows;
  }
}

// Queries per block: a block of rows [r0, r1) needs only keys [0, r1), so the products skip the
// blocks above the diagonal (about half the multiply work at T = 256, T / (2 · 64) blocks).
constexpr int64_t kCausalBlock = 64;

// Row t of the causal softmax: its first `len` = t + 1 scores become probabilities, the rest 0.
LOOM_VECTORIZED void CausalSoftmaxRow(float* row, int64_t len, int64_t total) {
  const float maxv = LaneMax(row, len);
  for (int64_t s = 0; s < len; ++s) row[s] = FastExp(row[s] - maxv);
  const float inv = 1.0f / LaneSum(len, [row](int64_t s) { return row[s]; });
  for (int64_t s = 0; s < len; ++s) row[s] *= inv;
  for (int64_t s = len; s < total; ++s) row[s] = 0.0f;
}

// Softmax backward of one row: dS = P ⊙ (dP − Σ_s P·dP) · scale; zero above the diagonal.
LOOM_VECTORIZED void CausalSoftmaxBackwardRow(const float* prow, float* drow, int64_t len,
                                              int64_t total, float scale) {
  const float dot = LaneSum(len, [prow, drow](int64_t s) { return prow[s] * drow[s]; });
  for (int64_t s = 0; s < len; ++s) drow[s] = prow[s] * (drow[s] - dot) * scale;
  for (int64_t s = len; s < total; ++s) drow[s] = 0.0f;
}

// The forward of every (batch, head) pair on operands of type T (f32, or bf16 with the
// probabilities rounded to bf16 before P·V).
template <typename T>
void Forward(const HeadGeometry& g, const T* pqkv, float* pout, T* pprobs) {
  ParallelFor(g.B * g.NH, 1, [&](int64_t begin, int64_t end) {
    std::vector<float> block(kBf16<T> ? static_cast<size_t>(kCausalBlock * g.T) : 0);
    for (int64_t bh = begin; bh < end; ++bh) {
      const int64_t b = bh / g.NH, h = bh % g.NH;
      T* p = pprobs + bh * g.T * g.T;  // probs[b, h]: [T, T]
      const T* q = pqkv + g.Qkv(b, 0, h);
      const T* k = pqkv + g.Qkv(b, 1, h);
      const T* v = pqkv + g.Qkv(b, 2, h);
      for (int64_t r0 = 0; r0 < g.T; r0 += kCausalBlock) {
        const int64_t r1 = std::min(g.T, r0 + kCausalBlock);  // rows [r0, r1) see keys [0, r1)
        // scores = scale · Q Kᵀ, softmax in f32
        float* s = F32Rows(p + r0 * g.T, block);
        Gemm(false, true, r1 - r0, r1, g.HS, g.scale, q + r0 * 3 * g.C, 3 * g.C, k, 3 * g.C, 0.0f,
             s, g.T);
        for (int64_t t = r0; t < r1; ++t) CausalSoftmaxRow(s + (t - r0) * g.T, t + 1, g.T);
        NarrowInto(s, p + r0 * g.T, (r1 - r0) * g.T);
        // out_h = P V
        Gemm(false, false, r1 - r0, g.HS, r1, 1.0f, p + r0 * g.T, g.T, v, 3 * g.C, 0.0f,
             pout + g.Heads(b, h) + r0 * g.C, g.C);
      }
    }
  });
}

// The backward of every (batch, head) pair on operands of type T (f32, or bf16 with dS rounded to
// bf16 before the products that read it; the softmax backward in f32).
template <typename T>
void Backward(const HeadGeometry& g, const T* pdout, const T* pqkv, const T* pprobs, float* pdqkv) {
  ParallelFor(g.B * g.NH, 1, [&](int64_t begin, int64_t end) {
    std::vector<float> dscore(static_cast<size_t>(g.T * g.T));
    std::vector<T> dscore_narrow(kBf16<T> ? static_cast<size_t>(g.T * g.T) : 0);
    std::vector<float> prob_rows(kBf16<T> ? static_cast<size_t>(kCausalBlock * g.T) : 0);
    for (int64_t bh = begin; bh < end; ++bh) {
      const int64_t b = bh / g.NH, h = bh % g.NH;
      const T* p = pprobs + bh * g.T * g.T;
      const T* d = pdout + g.Heads(b, h);
      const T* q = pqkv + g.Qkv(b, 0, h);
      const T* k = pqkv + g.Qkv(b, 1, h);
      const T* v = pqkv + g.Qkv(b, 2, h);
      float* dq = pdqkv + g.Qkv(b, 0, h);
      float* dk = pdqkv + g.Qkv(b, 1, h);
      float* dv = pdqkv + g.Qkv(b, 2, h);
      float* ds = dscore.data();
      const T* ds_operand;  // dS as the products read it
      if constexpr (kBf16<T>) {
        ds_operand = dscore_narrow.data();
      } else {
        ds_operand = ds;
      }
      // By row block: dP = dO Vᵀ (keys [0, r1)), dS = softmax backward, dQ += dS K.
      for (int64_t r0 = 0; r0 < g.T; r0 += kCausalBlock) {
        const int64_t r1 = std::min(g.T, r0 + kCausalBlock);
        const int64_t n = (r1 - r0) * g.T;
        Gemm(false, true, r1 - r0, r1, g.HS, 1.0f, d + r0 * g.C, g.C, v, 3 * g.C, 0.0f,
             ds + r0 * g.T, g.T);
        const float* prow = WidenedRows(p + r0 * g.T, n, prob_rows);
        for (int64_t t = r0; t < r1; ++t) {
          CausalSoftmaxBackwardRow(prow + (t - r0) * g.T, ds + t * g.T, t + 1, g.T, g.scale);
        }
        if constexpr (kBf16<T>) NarrowInto(ds + r0 * g.T, dscore_narrow.data() + r0 * g.T, n);
        Gemm(false, false, r1 - r0, g.HS, r1, 1.0f, ds_operand + r0 * g.T, g.T, k, 3 * g.C, 1.0f,
             dq + r0 * 3 * g.C, 3 * g.C);
      }
      // By key block: keys [s0, s1) are seen by queries [s0, T): dV += Pᵀ dO, dK += dSᵀ Q.
      for (int64_t s0 = 0; s0 < g.T; s0 += kCausalBlock) {
        const int64_t s1 = std::min(g.T, s0 + kCausalBlock);
        Gemm(true, false, s1 - s0, g.HS, g.T - s0, 1.0f, p + s0 * g.T + s0, g.T, d + s0 * g.C, g.C,
             1.0f, dv + s0 * 3 * g.C, 3 * g.C);
        Gemm(true, false, s1 - s0, g.HS, g.T - s0, 1.0f, ds_operand + s0 * g.T + s0, g.T,
             q + s0 * 3 * g.C, 3 * g.C, 1.0f, dk + s0 * 3 * g.C, 3 * g.C);
      }
    }
  });
}

const uint16_t* Bf16Data(const Tensor& t) { return static_cast<const uint16_t*>(t.raw_data()); }

}  // namespace

void AttentionForward(const Tensor& qkv, int64_t num_heads, Tensor& out, Tensor& probs) {
  const HeadGeometry g(qkv, num_heads);
  if (qkv.dtype() == DType::kBF16) {
    Forward(g, Bf16Data(qkv), out.data<float>(), static_cast<uint16_t*>(probs.raw_data()));
  } else {
    Forward(g, qkv.data<float>(), out.data<float>(), probs.data<float>());
  }
}

void AttentionBackward(const Tensor& dout, const Tensor& qkv, const Tensor& probs,
                       int64_t num_heads, Tensor& dqkv) {
  const HeadGeometry g(qkv, num_heads);
  if (qkv.dtype() == DType::kBF16) {
    Tensor dout16 = Tensor::Empty(dout.shape(), DType::kBF16, MemoryTag::kWorkspace,
                                  &Allocator::Default());  // host, whatever the scope
    ConvertBuffer(dout.raw_data(), DType::kF32, dout16.raw_data(), DType::kBF16, dout.numel());
    Backward(g, Bf16Data(dout16), Bf16Data(qkv), Bf16Data(probs), dqkv.data<float>());
  } else {
    Backward(g, dout.data<float>(), qkv.data<float>(), probs.data<float>(), dqkv.data<float>());
  }
}

}  // namespace loom::runtime::kernels::cpu
