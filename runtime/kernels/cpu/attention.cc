#include <cmath>
#include <vector>

#include "runtime/kernels/cpu/cpu_kernels.h"
#include "runtime/parallel.h"

namespace loom::runtime::kernels::cpu {

// One (batch, head) pair per work item; each writes only its own slices of out / dqkv, so there
// are no races and no order dependence on the thread count.
//   qkv[b, t, :] = [q (NH·HS) | k (NH·HS) | v (NH·HS)], head h at offset h·HS within each.

void AttentionForward(const Tensor& qkv, int64_t num_heads, Tensor& out, Tensor& probs) {
  const int64_t B = qkv.dim(0), T = qkv.dim(1), C = qkv.dim(2) / 3, NH = num_heads;
  const int64_t HS = C / NH;
  const float scale = 1.0f / std::sqrt(static_cast<float>(HS));
  const float* pqkv = qkv.data<float>();
  float* pout = out.data<float>();
  float* pprobs = probs.data<float>();
  ParallelFor(B * NH, 1, [&](int64_t begin, int64_t end) {
    for (int64_t bh = begin; bh < end; ++bh) {
      const int64_t b = bh / NH, h = bh % NH;
      const float* base = pqkv + b * T * 3 * C;
      for (int64_t t = 0; t < T; ++t) {
        const float* q = base + t * 3 * C + h * HS;
        float* p = pprobs + (bh * T + t) * T;  // probs[b, h, t, :]
        float maxv = -INFINITY;
        for (int64_t s = 0; s <= t; ++s) {
          const float* k = base + s * 3 * C + C + h * HS;
          float dot = 0.0f;
          for (int64_t i = 0; i < HS; ++i) dot += q[i] * k[i];
          p[s] = dot * scale;
          maxv = std::max(maxv, p[s]);
        }
        float sum = 0.0f;
        for (int64_t s = 0; s <= t; ++s) {
          p[s] = std::exp(p[s] - maxv);
          sum += p[s];
        }
        const float inv = 1.0f / sum;
        for (int64_t s = 0; s <= t; ++s) p[s] *= inv;
        for (int64_t s = t + 1; s < T; ++s) p[s] = 0.0f;
        float* o = pout + (b * T + t) * C + h * HS;
        for (int64_t i = 0; i < HS; ++i) o[i] = 0.0f;
        for (int64_t s = 0; s <= t; ++s) {
          const float* v = base + s * 3 * C + 2 * C + h * HS;
          for (int64_t i = 0; i < HS; ++i) o[i] += p[s] * v[i];
        }
      }
    }
  });
}

void AttentionBackward(const Tensor& dout, const Tensor& qkv, const Tensor& probs,
                       int64_t num_heads, Tensor& dqkv) {
  const int64_t B = qkv.dim(0), T = qkv.dim(1), C = qkv.dim(2) / 3, NH = num_heads;
  const int64_t HS = C / NH;
  const float scale = 1.0f / std::sqrt(static_cast<float>(HS));
  const float* pqkv = qkv.data<float>();
  const float* pdout = dout.data<float>();
  const float* pprobs = probs.data<float>();
  float* pdqkv = dqkv.data<float>();
  ParallelFor(B * NH, 1, [&](int64_t begin, int64_t end) {
    std::vector<float> dscore(static_cast<size_t>(T));
    for (int64_t bh = begin; bh < end; ++bh) {
      const int64_t b = bh / NH, h = bh % NH;
      const float* base = pqkv + b * T * 3 * C;
      float* dbase = pdqkv + b * T * 3 * C;
      for (int64_t t = 0; t < T; ++t) {
        const float* p = pprobs + (bh * T + t) * T;
        const float* d = pdout + (b * T + t) * C + h * HS;
        // dp[s] = dout_t · v_s; dv_s += p[s] · dout_t.
        float dot_pdp = 0.0f;
        for (int64_t s = 0; s <= t; ++s) {
          const float* v = base + s * 3 * C + 2 * C + h * HS;
          float* dv = dbase + s * 3 * C + 2 * C + h * HS;
          float dp = 0.0f;
          for (int64_t i = 0; i < HS; ++i) {
            dp += d[i] * v[i];
            dv[i] += p[s] * d[i];
          }
          dscore[s] = dp;
          dot_pdp += p[s] * dp;
        }
        // Softmax backward: dscore = p ⊙ (dp - Σ p·dp); then through the scaled q·k.
        const float* q = base + t * 3 * C + h * HS;
        float* dq = dbase + t * 3 * C + h * HS;
        for (int64_t s = 0; s <= t; ++s) {
          const float ds = p[s] * (dscore[s] - dot_pdp) * scale;
          const float* k = base + s * 3 * C + C + h * HS;
          float* dk = dbase + s * 3 * C + C + h * HS;
          for (int64_t i = 0; i < HS; ++i) {
            dq[i] += ds * k[i];
            dk[i] += ds * q[i];
          }
        }
      }
    }
  });
}

}  // namespace loom::runtime::kernels::cpu
