// Causal attention in the flash form on the CPU (runtime/kernels/attention.h): no T x T
// probabilities are kept. The forward saves each query row's log-sum-exp of its scaled, masked
// scores; the backward recomputes every probability from q, k and that log-sum-exp, with
// D_t = dout_t · out_t standing in for the softmax's row sum. One (batch, head) pair per work
// item, its query rows in order, each sum in index order: the reference the CUDA twin is checked
// against, and deterministic on any thread count. f32 or bf16 qkv (widened on reading; the
// arithmetic is f32 either way).
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

#include "runtime/bf16_bits.h"
#include "runtime/kernels/cpu/cpu_kernels.h"
#include "runtime/kernels/cpu/head_geometry.h"
#include "runtime/parallel.h"

namespace loom::runtime::kernels::cpu {
namespace {

float Load(float v) { return v; }
float Load(uint16_t bits) {  // bf16: the high half of an f32
  return BF16BitsToF32(bits);
}

// Element offsets of token row `row` of (batch, head): q (part 0), k (1) or v (2) in qkv; the
// head's slice of a [B, T, C] tensor; its log-sum-exp in [B, NH, T].
int64_t QkvAt(const HeadGeometry& g, int64_t batch, int64_t head, int64_t row, int part) {
  return g.Qkv(batch, part, head) + row * 3 * g.C;
}
int64_t RowsAt(const HeadGeometry& g, int64_t batch, int64_t head, int64_t row) {
  return g.Heads(batch, head) + row * g.C;
}
int64_t LseAt(const HeadGeometry& g, int64_t batch, int64_t head, int64_t row) {
  return (batch * g.NH + head) * g.T + row;
}

template <typename T>
float Dot(const T* a, const T* b, int64_t n) {
  float s = 0.0f;
  for (int64_t i = 0; i < n; ++i) s += Load(a[i]) * Load(b[i]);
  return s;
}

template <typename T>
void Forward(const T* qkv, const HeadGeometry& g, float* out, float* lse) {
  ParallelFor(g.B * g.NH, 1, [&](int64_t begin, int64_t end) {
    std::vector<float> p(static_cast<size_t>(g.T));
    for (int64_t item = begin; item < end; ++item) {
      const int64_t batch = item / g.NH, head = item % g.NH;
      for (int64_t i = 0; i < g.T; ++i) {
        const T* q = qkv + QkvAt(g, batch, head, i, 0);
        float m = -INFINITY;
        for (int64_t j = 0; j <= i; ++j) {
          p[j] = Dot(q, qkv + QkvAt(g, batch, head, j, 1), g.HS) * g.scale;
          m = std::max(m, p[j]);
        }
        float l = 0.0f;
        for (int64_t j = 0; j <= i; ++j) {
          p[j] = std::exp(p[j] - m);
          l += p[j];
        }
        float* o = out + RowsAt(g, batch, head, i);
        for (int64_t d = 0; d < g.HS; ++d) o[d] = 0.0f;
        for (int64_t j = 0; j <= i; ++j) {
          const float w = p[j] / l;
          const T* v = qkv + QkvAt(g, batch, head, j, 2);
          for (int64_t d = 0; d < g.HS; ++d) o[d] += w * Load(v[d]);
        }
        lse[LseAt(g, batch, head, i)] = m + std::log(l);
      }
    }
  });
}

template <typename T>
void Backward(const float* dout, const T* qkv, const float* out, const float* lse,
              const HeadGeometry& g, float* dqkv) {
  ParallelFor(g.B * g.NH, 1, [&](int64_t begin, int64_t end) {
    for (int64_t item = begin; item < end; ++item) {
      const int64_t batch = item / g.NH, head = item % g.NH;
      for (int64_t i = 0; i < g.T; ++i) {
        const T* q = qkv + QkvAt(g, batch, head, i, 0);
        const float* d_o = dout + RowsAt(g, batch, head, i);
        const float* o = out + RowsAt(g, batch, head, i);
        float delta = 0.0f;  // dout_i · out_i = Σ_j p_ij (dout_i · v_j)
        for (int64_t d = 0; d < g.HS; ++d) delta += d_o[d] * o[d];
        const float row_lse = lse[LseAt(g, batch, head, i)];
        float* dq = dqkv + QkvAt(g, batch, head, i, 0);
        for (int64_t j = 0; j <= i; ++j) {
          const T* k = qkv + QkvAt(g, batch, head, j, 1);
          const T* v = qkv + QkvAt(g, batch, head, j, 2);
          const float p = std::exp(Dot(q, k, g.HS) * g.scale - row_lse);
          float dp = 0.0f;
          for (int64_t d = 0; d < g.HS; ++d) dp += d_o[d] * Load(v[d]);
          const float ds = p * (dp - delta) * g.scale;
          float* dk = dqkv + QkvAt(g, batch, head, j, 1);
          float* dv = dqkv + QkvAt(g, batch, head, j, 2);
          for (int64_t d = 0; d < g.HS; ++d) {
            dq[d] += ds * Load(k[d]);
            dk[d] += ds * Load(q[d]);
            dv[d] += p * d_o[d];
          }
        }
      }
    }
  });
}

}  // namespace

void FlashAttentionForward(const Tensor& qkv, int64_t num_heads, Tensor& out, Tensor& lse) {
  const HeadGeometry g(qkv, num_heads);
  if (qkv.dtype() == DType::kBF16) {
    Forward(static_cast<const uint16_t*>(qkv.raw_data()), g, out.data<float>(), lse.data<float>());
  } else {
    Forward(qkv.data<float>(), g, out.data<float>(), lse.data<float>());
  }
}

void FlashAttentionBackward(const Tensor& dout, const Tensor& qkv, const Tensor& out,
                            const Tensor& lse, int64_t num_heads, Tensor& dqkv) {
  const HeadGeometry g(qkv, num_heads);
  if (qkv.dtype() == DType::kBF16) {
    Backward(dout.data<float>(), static_cast<const uint16_t*>(qkv.raw_data()), out.data<float>(),
             lse.data<float>(), g, dqkv.data<float>());
  } else {
    Backward(dout.data<float>(), qkv.data<float>(), out.data<float>(), lse.data<float>(), g,
             dqkv.data<float>());
  }
}

}  // namespace loom::runtime::kernels::cpu
