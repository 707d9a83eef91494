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
#include <cstring>
#include <vector>

#include "runtime/kernels/cpu/cpu_kernels.h"
#include "runtime/parallel.h"

namespace loom::runtime::kernels::cpu {
namespace {

float Load(float v) { return v; }
float Load(uint16_t bits) {  // bf16: the high half of an f32
  const uint32_t wide = static_cast<uint32_t>(bits) << 16;
  float f;
  std::memcpy(&f, &wide, sizeof(f));
  return f;
}

// Head h of batch b in the fused qkv [B, T, 3C] and in [B, T, C] rows, and the softmax scale.
struct FlashGeometry {
  int64_t b, t, c, heads, hs;
  float scale;
  FlashGeometry(const Tensor& qkv, int64_t num_heads)
      : b(qkv.dim(0)),
        t(qkv.dim(1)),
        c(qkv.dim(2) / 3),
        heads(num_heads),
        hs(c / num_heads),
        scale(1.0f / std::sqrt(static_cast<float>(c / num_heads))) {}
  // Element offsets of token row `row` of (batch, head): q (part 0), k (1) or v (2) in qkv; the
  // head's slice in a [B, T, C] tensor; its log-sum-exp in [B, NH, T].
  int64_t Qkv(int64_t batch, int64_t head, int64_t row, int part) const {
    return (batch * t + row) * 3 * c + part * c + head * hs;
  }
  int64_t Rows(int64_t batch, int64_t head, int64_t row) const {
    return (batch * t + row) * c + head * hs;
  }
  int64_t Lse(int64_t batch, int64_t head, int64_t row) const {
    return (batch * heads + head) * t + row;
  }
};

template <typename T>
float Dot(const T* a, const T* b, int64_t n) {
  float s = 0.0f;
  for (int64_t i = 0; i < n; ++i) s += Load(a[i]) * Load(b[i]);
  return s;
}

template <typename T>
void Forward(const T* qkv, const FlashGeometry& g, float* out, float* lse) {
  ParallelFor(g.b * g.heads, 1, [&](int64_t begin, int64_t end) {
    std::vector<float> p(static_cast<size_t>(g.t));
    for (int64_t item = begin; item < end; ++item) {
      const int64_t batch = item / g.heads, head = item % g.heads;
      for (int64_t i = 0; i < g.t; ++i) {
        const T* q = qkv + g.Qkv(batch, head, i, 0);
        float m = -INFINITY;
        for (int64_t j = 0; j <= i; ++j) {
          p[j] = Dot(q, qkv + g.Qkv(batch, head, j, 1), g.hs) * g.scale;
          m = std::max(m, p[j]);
        }
        float l = 0.0f;
        for (int64_t j = 0; j <= i; ++j) {
          p[j] = std::exp(p[j] - m);
          l += p[j];
        }
        float* o = out + g.Rows(batch, head, i);
        for (int64_t d = 0; d < g.hs; ++d) o[d] = 0.0f;
        for (int64_t j = 0; j <= i; ++j) {
          const float w = p[j] / l;
          const T* v = qkv + g.Qkv(batch, head, j, 2);
          for (int64_t d = 0; d < g.hs; ++d) o[d] += w * Load(v[d]);
        }
        lse[g.Lse(batch, head, i)] = m + std::log(l);
      }
    }
  });
}

template <typename T>
void Backward(const float* dout, const T* qkv, const float* out, const float* lse,
              const FlashGeometry& g, float* dqkv) {
  ParallelFor(g.b * g.heads, 1, [&](int64_t begin, int64_t end) {
    for (int64_t item = begin; item < end; ++item) {
      const int64_t batch = item / g.heads, head = item % g.heads;
      for (int64_t i = 0; i < g.t; ++i) {
        const T* q = qkv + g.Qkv(batch, head, i, 0);
        const float* d_o = dout + g.Rows(batch, head, i);
        const float* o = out + g.Rows(batch, head, i);
        float delta = 0.0f;  // dout_i · out_i = Σ_j p_ij (dout_i · v_j)
        for (int64_t d = 0; d < g.hs; ++d) delta += d_o[d] * o[d];
        const float row_lse = lse[g.Lse(batch, head, i)];
        float* dq = dqkv + g.Qkv(batch, head, i, 0);
        for (int64_t j = 0; j <= i; ++j) {
          const T* k = qkv + g.Qkv(batch, head, j, 1);
          const T* v = qkv + g.Qkv(batch, head, j, 2);
          const float p = std::exp(Dot(q, k, g.hs) * g.scale - row_lse);
          float dp = 0.0f;
          for (int64_t d = 0; d < g.hs; ++d) dp += d_o[d] * Load(v[d]);
          const float ds = p * (dp - delta) * g.scale;
          float* dk = dqkv + g.Qkv(batch, head, j, 1);
          float* dv = dqkv + g.Qkv(batch, head, j, 2);
          for (int64_t d = 0; d < g.hs; ++d) {
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
  const FlashGeometry g(qkv, num_heads);
  if (qkv.dtype() == DType::kBF16) {
    Forward(static_cast<const uint16_t*>(qkv.raw_data()), g, out.data<float>(), lse.data<float>());
  } else {
    Forward(qkv.data<float>(), g, out.data<float>(), lse.data<float>());
  }
}

void FlashAttentionBackward(const Tensor& dout, const Tensor& qkv, const Tensor& out,
                            const Tensor& lse, int64_t num_heads, Tensor& dqkv) {
  const FlashGeometry g(qkv, num_heads);
  if (qkv.dtype() == DType::kBF16) {
    Backward(dout.data<float>(), static_cast<const uint16_t*>(qkv.raw_data()), out.data<float>(),
             lse.data<float>(), g, dqkv.data<float>());
  } else {
    Backward(dout.data<float>(), qkv.data<float>(), out.data<float>(), lse.data<float>(), g,
             dqkv.data<float>());
  }
}

}  // namespace loom::runtime::kernels::cpu
