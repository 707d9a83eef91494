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
#include <algorithm>
#include <cmath>
#include <vector>

#include "runtime/kernels/cpu/cpu_kernels.h"
#include "runtime/kernels/cpu/fast_math.h"
#include "runtime/kernels/cpu/gemm.h"
#include "runtime/parallel.h"
#include "runtime/vectorize.h"

namespace loom::runtime::kernels::cpu {
namespace {

struct HeadGeometry {
  int64_t B, T, C, NH, HS;
  float scale;  // 1 / √HS

  explicit HeadGeometry(const Tensor& qkv, int64_t num_heads)
      : B(qkv.dim(0)),
        T(qkv.dim(1)),
        C(qkv.dim(2) / 3),
        NH(num_heads),
        HS(C / num_heads),
        scale(1.0f / std::sqrt(static_cast<float>(C / num_heads))) {}

  // Offset of head h's q (part 0), k (1) or v (2) in row 0 of batch b of a [B, T, 3C] tensor.
  int64_t Qkv(int64_t b, int64_t part, int64_t h) const {
    return b * T * 3 * C + part * C + h * HS;
  }
  // Offset of head h in row 0 of batch b of a [B, T, C] tensor.
  int64_t Heads(int64_t b, int64_t h) const { return b * T * C + h * HS; }
};

// C[M, N] = alpha · op(A) · op(B) + beta · C, row-major with explicit leading dimensions.
void Gemm(bool ta, bool tb, int64_t m, int64_t n, int64_t k, float alpha, const float* a,
          int64_t lda, const float* b, int64_t ldb, float beta, float* c, int64_t ldc) {
  Sgemm({.trans_a = ta, .trans_b = tb, .m = m, .n = n, .k = k, .lda = lda, .ldb = ldb, .ldc = ldc},
        alpha, a, b, beta, c);
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

}  // namespace

void AttentionForward(const Tensor& qkv, int64_t num_heads, Tensor& out, Tensor& probs) {
  const HeadGeometry g(qkv, num_heads);
  const float* pqkv = qkv.data<float>();
  float* pout = out.data<float>();
  float* pprobs = probs.data<float>();
  ParallelFor(g.B * g.NH, 1, [&](int64_t begin, int64_t end) {
    for (int64_t bh = begin; bh < end; ++bh) {
      const int64_t b = bh / g.NH, h = bh % g.NH;
      float* p = pprobs + bh * g.T * g.T;  // probs[b, h]: [T, T]
      const float* q = pqkv + g.Qkv(b, 0, h);
      const float* k = pqkv + g.Qkv(b, 1, h);
      const float* v = pqkv + g.Qkv(b, 2, h);
      for (int64_t r0 = 0; r0 < g.T; r0 += kCausalBlock) {
        const int64_t r1 = std::min(g.T, r0 + kCausalBlock);  // rows [r0, r1) see keys [0, r1)
        // scores = scale · Q Kᵀ
        Gemm(false, true, r1 - r0, r1, g.HS, g.scale, q + r0 * 3 * g.C, 3 * g.C, k, 3 * g.C, 0.0f,
             p + r0 * g.T, g.T);
        for (int64_t t = r0; t < r1; ++t) CausalSoftmaxRow(p + t * g.T, t + 1, g.T);
        // out_h = P V
        Gemm(false, false, r1 - r0, g.HS, r1, 1.0f, p + r0 * g.T, g.T, v, 3 * g.C, 0.0f,
             pout + g.Heads(b, h) + r0 * g.C, g.C);
      }
    }
  });
}

void AttentionBackward(const Tensor& dout, const Tensor& qkv, const Tensor& probs,
                       int64_t num_heads, Tensor& dqkv) {
  const HeadGeometry g(qkv, num_heads);
  const float* pqkv = qkv.data<float>();
  const float* pdout = dout.data<float>();
  const float* pprobs = probs.data<float>();
  float* pdqkv = dqkv.data<float>();
  ParallelFor(g.B * g.NH, 1, [&](int64_t begin, int64_t end) {
    std::vector<float> dscore(static_cast<size_t>(g.T * g.T));
    for (int64_t bh = begin; bh < end; ++bh) {
      const int64_t b = bh / g.NH, h = bh % g.NH;
      const float* p = pprobs + bh * g.T * g.T;
      const float* d = pdout + g.Heads(b, h);
      const float* q = pqkv + g.Qkv(b, 0, h);
      const float* k = pqkv + g.Qkv(b, 1, h);
      const float* v = pqkv + g.Qkv(b, 2, h);
      float* dq = pdqkv + g.Qkv(b, 0, h);
      float* dk = pdqkv + g.Qkv(b, 1, h);
      float* dv = pdqkv + g.Qkv(b, 2, h);
      float* ds = dscore.data();
      // By row block: dP = dO Vᵀ (keys [0, r1)), dS = softmax backward, dQ += dS K.
      for (int64_t r0 = 0; r0 < g.T; r0 += kCausalBlock) {
        const int64_t r1 = std::min(g.T, r0 + kCausalBlock);
        Gemm(false, true, r1 - r0, r1, g.HS, 1.0f, d + r0 * g.C, g.C, v, 3 * g.C, 0.0f,
             ds + r0 * g.T, g.T);
        for (int64_t t = r0; t < r1; ++t) {
          CausalSoftmaxBackwardRow(p + t * g.T, ds + t * g.T, t + 1, g.T, g.scale);
        }
        Gemm(false, false, r1 - r0, g.HS, r1, 1.0f, ds + r0 * g.T, g.T, k, 3 * g.C, 1.0f,
             dq + r0 * 3 * g.C, 3 * g.C);
      }
      // By key block: keys [s0, s1) are seen by queries [s0, T): dV += Pᵀ dO, dK += dSᵀ Q.
      for (int64_t s0 = 0; s0 < g.T; s0 += kCausalBlock) {
        const int64_t s1 = std::min(g.T, s0 + kCausalBlock);
        Gemm(true, false, s1 - s0, g.HS, g.T - s0, 1.0f, p + s0 * g.T + s0, g.T, d + s0 * g.C, g.C,
             1.0f, dv + s0 * 3 * g.C, 3 * g.C);
        Gemm(true, false, s1 - s0, g.HS, g.T - s0, 1.0f, ds + s0 * g.T + s0, g.T, q + s0 * 3 * g.C,
             3 * g.C, 1.0f, dk + s0 * 3 * g.C, 3 * g.C);
      }
    }
  });
}

}  // namespace loom::runtime::kernels::cpu
