// Causal attention on the device (the CPU's runtime/kernels/cpu/attention.cc), written for
// correctness first: one block per (batch, head, query row) computes that row's scores into
// shared memory, its softmax (block reductions in a fixed order) and its output; backward takes
// one block per query row for dS and dQ, then one per key row for dK and dV, so every element of
// dqkv is summed by one thread in a fixed order (no atomics). On bf16 qkv and probs the CPU's
// rounding points hold: probabilities rounded to bf16 before P·V, dout and dS before the products
// that read them, softmax and its backward in f32.
#include <cmath>

#include "runtime/bf16_bits.h"
#include "runtime/kernels/cuda/block_reduce.cuh"
#include "runtime/kernels/cuda/cuda_kernels.h"
#include "runtime/kernels/cuda/launch.h"

namespace loom::runtime::kernels::cuda {
namespace {

__device__ float RoundBf16(float v) { return BF16BitsToF32(F32BitsToBF16(__float_as_uint(v))); }

// Element i of an f32 or bf16 buffer, as f32.
__device__ float Load(const void* p, int64_t i, bool bf16) {
  return bf16 ? BF16BitsToF32(static_cast<const uint16_t*>(p)[i]) : static_cast<const float*>(p)[i];
}

struct Geometry {
  int64_t B, T, C, NH, HS;
  float scale;
  __device__ explicit Geometry(const AttentionArgs& a)
      : B(a.batch),
        T(a.seq),
        C(a.channels),
        NH(a.heads),
        HS(a.channels / a.heads),
        scale(1.0f / sqrtf(static_cast<float>(a.channels / a.heads))) {}
  // Offset of head h's q (part 0), k (1) or v (2) in row t of batch b of qkv [B, T, 3C].
  __device__ int64_t Qkv(int64_t b, int64_t t, int64_t part, int64_t h) const {
    return (b * T + t) * 3 * C + part * C + h * HS;
  }
  // The work units, one per (batch, head, row): unit u is row u % T of head bh % NH of batch
  // bh / NH, with bh = u / T (the row of probs [B, NH, T, T] is bh · T + t).
  struct Unit {
    int64_t bh, t, b, h;
  };
  __device__ int64_t Units() const { return B * NH * T; }
  __device__ Unit UnitAt(int64_t u) const {
    const int64_t bh = u / T;
    return {bh, u % T, bh / NH, bh % NH};
  }
  // Offset of head h in row t of batch b of a [B, T, C] tensor.
  __device__ int64_t Heads(int64_t b, int64_t t, int64_t h) const {
    return (b * T + t) * C + h * HS;
  }
};

// Shared memory: the row's T scores, then kBlock floats for the reductions.
__global__ void ForwardKernel(AttentionArgs a, float* out, void* probs) {
  extern __shared__ float smem[];
  const Geometry g(a);
  float* scores = smem;
  float* red = smem + g.T;
  for (int64_t u = blockIdx.x; u < g.Units(); u += gridDim.x) {
    const auto [bh, i, b, h] = g.UnitAt(u);
    const int64_t q = g.Qkv(b, i, 0, h);
    for (int64_t j = threadIdx.x; j <= i; j += blockDim.x) {
      const int64_t k = g.Qkv(b, j, 1, h);
      float dot = 0.0f;
      for (int64_t d = 0; d < g.HS; ++d)
        dot += Load(a.qkv, q + d, a.bf16) * Load(a.qkv, k + d, a.bf16);
      scores[j] = g.scale * dot;
    }
    __syncthreads();
    float m = -INFINITY;
    for (int64_t j = threadIdx.x; j <= i; j += blockDim.x) m = fmaxf(m, scores[j]);
    m = BlockMax(m, red);
    float s = 0.0f;
    for (int64_t j = threadIdx.x; j <= i; j += blockDim.x) {
      const float e = expf(scores[j] - m);
      scores[j] = e;
      s += e;
    }
    const float inv = 1.0f / BlockSum(s, red);
    const int64_t prow = (bh * g.T + i) * g.T;
    for (int64_t j = threadIdx.x; j < g.T; j += blockDim.x) {
      float p = j <= i ? scores[j] * inv : 0.0f;
      if (a.bf16) {
        const uint16_t bits = F32BitsToBF16(__float_as_uint(p));
        static_cast<uint16_t*>(probs)[prow + j] = bits;
        p = BF16BitsToF32(bits);
      } else {
        static_cast<float*>(probs)[prow + j] = p;
      }
      if (j <= i) scores[j] = p;  // as P·V reads it
    }
    __syncthreads();
    for (int64_t d = threadIdx.x; d < g.HS; d += blockDim.x) {
      float acc = 0.0f;
      for (int64_t j = 0; j <= i; ++j)
        acc += scores[j] * Load(a.qkv, g.Qkv(b, j, 2, h) + d, a.bf16);
      out[g.Heads(b, i, h) + d] = acc;
    }
    __syncthreads();  // before the next unit overwrites the scores
  }
}

// dout as the products read it: bf16-rounded on bf16 operands.
__device__ float LoadDout(const float* dout, int64_t i, bool bf16) {
  return bf16 ? RoundBf16(dout[i]) : dout[i];
}

// Per query row i: dP = dO·Vᵀ, dS = P ⊙ (dP − Σ P·dP) · scale (bf16-rounded on bf16 operands),
// written to dscores; dQ_i += dS·K.
__global__ void BackwardQueryKernel(AttentionArgs a, const float* dout, const void* probs,
                                    float* dscores, float* dqkv) {
  extern __shared__ float smem[];
  const Geometry g(a);
  float* ds = smem;
  float* red = smem + g.T;
  for (int64_t u = blockIdx.x; u < g.Units(); u += gridDim.x) {
    const auto [bh, i, b, h] = g.UnitAt(u);
    const int64_t prow = (bh * g.T + i) * g.T;
    const int64_t o = g.Heads(b, i, h);
    float dot = 0.0f;
    for (int64_t j = threadIdx.x; j <= i; j += blockDim.x) {
      const int64_t v = g.Qkv(b, j, 2, h);
      float dp = 0.0f;
      for (int64_t d = 0; d < g.HS; ++d)
        dp += LoadDout(dout, o + d, a.bf16) * Load(a.qkv, v + d, a.bf16);
      ds[j] = dp;
      dot += Load(probs, prow + j, a.bf16) * dp;
    }
    dot = BlockSum(dot, red);
    for (int64_t j = threadIdx.x; j < g.T; j += blockDim.x) {
      float v = 0.0f;
      if (j <= i) {
        v = Load(probs, prow + j, a.bf16) * (ds[j] - dot) * g.scale;
        if (a.bf16) v = RoundBf16(v);
        ds[j] = v;
      }
      dscores[prow + j] = v;
    }
    __syncthreads();
    for (int64_t d = threadIdx.x; d < g.HS; d += blockDim.x) {
      float acc = 0.0f;
      for (int64_t j = 0; j <= i; ++j) acc += ds[j] * Load(a.qkv, g.Qkv(b, j, 1, h) + d, a.bf16);
      dqkv[g.Qkv(b, i, 0, h) + d] += acc;
    }
    __syncthreads();
  }
}

// Per key row j (seen by queries j..T-1): dV_j += Σ_i P[i, j]·dO_i, dK_j += Σ_i dS[i, j]·Q_i.
__global__ void BackwardKeyKernel(AttentionArgs a, const float* dout, const void* probs,
                                  const float* dscores, float* dqkv) {
  const Geometry g(a);
  for (int64_t u = blockIdx.x; u < g.Units(); u += gridDim.x) {
    const auto [bh, j, b, h] = g.UnitAt(u);
    for (int64_t d = threadIdx.x; d < g.HS; d += blockDim.x) {
      float dv = 0.0f, dk = 0.0f;
      for (int64_t i = j; i < g.T; ++i) {
        const int64_t pij = (bh * g.T + i) * g.T + j;
        dv += Load(probs, pij, a.bf16) * LoadDout(dout, g.Heads(b, i, h) + d, a.bf16);
        dk += dscores[pij] * Load(a.qkv, g.Qkv(b, i, 0, h) + d, a.bf16);
      }
      dqkv[g.Qkv(b, j, 2, h) + d] += dv;
      dqkv[g.Qkv(b, j, 1, h) + d] += dk;
    }
  }
}

// ---- The batched-GEMM form: scores and products on cuBLASLt, the softmax here ----

// Row r of the [rows, T] scores is query row i = r % T: probs = softmax(scores[0..i]) and zeros
// above the diagonal, rounded to bf16 where probs is. `scores` may be `probs` (f32, in place:
// each element is read before the same thread writes it).
__global__ void CausalSoftmaxKernel(const float* scores, void* probs, bool bf16, int64_t rows,
                                    int64_t T) {
  __shared__ float red[kBlock];
  for (int64_t r = blockIdx.x; r < rows; r += gridDim.x) {
    const int64_t i = r % T;
    const float* s = scores + r * T;
    float m = -INFINITY;
    for (int64_t j = threadIdx.x; j <= i; j += blockDim.x) m = fmaxf(m, s[j]);
    m = BlockMax(m, red);
    float sum = 0.0f;
    for (int64_t j = threadIdx.x; j <= i; j += blockDim.x) sum += expf(s[j] - m);
    const float inv = 1.0f / BlockSum(sum, red);
    for (int64_t j = threadIdx.x; j < T; j += blockDim.x) {
      const float p = j <= i ? expf(s[j] - m) * inv : 0.0f;
      if (bf16) {
        static_cast<uint16_t*>(probs)[r * T + j] = F32BitsToBF16(__float_as_uint(p));
      } else {
        static_cast<float*>(probs)[r * T + j] = p;
      }
    }
  }
}

// Row r (query i = r % T): dS = P ⊙ (dP − Σ P·dP) · scale over 0..i, zeros above; in place in
// `dp` (f32), or bf16-rounded into `ds16` where probs is bf16.
__global__ void SoftmaxBackwardKernel(const void* probs, float* dp, uint16_t* ds16, bool bf16,
                                      int64_t rows, int64_t T, float scale) {
  __shared__ float red[kBlock];
  for (int64_t r = blockIdx.x; r < rows; r += gridDim.x) {
    const int64_t i = r % T;
    float dot = 0.0f;
    for (int64_t j = threadIdx.x; j <= i; j += blockDim.x) {
      dot += Load(probs, r * T + j, bf16) * dp[r * T + j];
    }
    dot = BlockSum(dot, red);
    for (int64_t j = threadIdx.x; j < T; j += blockDim.x) {
      const float v = j <= i ? Load(probs, r * T + j, bf16) * (dp[r * T + j] - dot) * scale : 0.0f;
      if (bf16) {
        ds16[r * T + j] = F32BitsToBF16(__float_as_uint(v));
      } else {
        dp[r * T + j] = v;
      }
    }
  }
}

// Pointers into the fused qkv and the [B, NH, T, T] probs for batch element b, in bytes.
struct GemmGeometry {
  int64_t T, C, NH, HS, es;
  ElemType type;
  float scale;
  explicit GemmGeometry(const AttentionArgs& a)
      : T(a.seq),
        C(a.channels),
        NH(a.heads),
        HS(a.channels / a.heads),
        es(a.bf16 ? 2 : 4),
        type(a.bf16 ? ElemType::kBF16 : ElemType::kF32),
        scale(1.0f / std::sqrt(static_cast<float>(a.channels / a.heads))) {}
  // Head 0 of q (part 0), k (1) or v (2) in row 0 of batch element b.
  const char* Qkv(const void* qkv, int64_t b, int64_t part) const {
    return static_cast<const char*>(qkv) + ((b * T * 3 * C) + part * C) * es;
  }
  int64_t Probs(int64_t b) const { return b * NH * T * T; }  // elements
};

// For each head h of a batch element: out_h = op(x_h) · op(y_h), x_h and y_h [rows, cols] views
// (row stride ld, head h at h · stride), out_h at h · stride_out: one batched cuBLASLt call.
struct HeadOperand {
  const void* p;
  int64_t ld, stride;
};
void HeadGemm(HeadOperand x, bool trans_x, HeadOperand y, bool trans_y, float* out, int64_t ldc,
              int64_t stride_out, int64_t m, int64_t n, int64_t k, float alpha, float beta,
              const GemmGeometry& g, Stream stream) {
  Gemm({.a = x.p,
        .b = y.p,
        .out = out,
        .in = g.type,
        .out_type = ElemType::kF32,
        .m = m,
        .n = n,
        .k = k,
        .trans_a = trans_x,
        .trans_b = trans_y,
        .alpha = alpha,
        .beta = beta,
        .lda = x.ld,
        .ldb = y.ld,
        .ldc = ldc,
        .batch = g.NH,
        .stride_a = x.stride,
        .stride_b = y.stride,
        .stride_out = stride_out},
       stream);
}

size_t SharedBytes(const AttentionArgs& a) {
  return static_cast<size_t>(a.seq + kBlock) * sizeof(float);
}

}  // namespace

void AttentionForward(const AttentionArgs& args, float* out, void* probs, Stream stream) {
  const int64_t blocks = RowBlocks(args.batch * args.heads * args.seq);
  if (blocks > 0) ForwardKernel<<<blocks, kBlock, SharedBytes(args), stream>>>(args, out, probs);
}

void AttentionBackward(const AttentionArgs& args, const float* dout, const void* probs,
                       float* dscores, float* dqkv, Stream stream) {
  const int64_t blocks = RowBlocks(args.batch * args.heads * args.seq);
  if (blocks == 0) return;
  BackwardQueryKernel<<<blocks, kBlock, SharedBytes(args), stream>>>(args, dout, probs, dscores,
                                                                     dqkv);
  BackwardKeyKernel<<<blocks, kBlock, 0, stream>>>(args, dout, probs, dscores, dqkv);
}

}  // namespace loom::runtime::kernels::cuda

namespace loom::runtime::kernels::cuda {

void AttentionForwardGemm(const AttentionArgs& args, float* out, void* probs, float* scores,
                          Stream stream) {
  const GemmGeometry g(args);
  const int64_t T = g.T, C = g.C, TT = g.T * g.T;
  const int64_t blocks = RowBlocks(g.NH * T);
  if (blocks == 0 || args.batch == 0) return;
  for (int64_t b = 0; b < args.batch; ++b) {
    void* p = static_cast<char*>(probs) + g.Probs(b) * g.es;
    float* s = args.bf16 ? scores : static_cast<float*>(p);
    // S_h = scale · Q_h · K_hᵀ, heads read in place from qkv (row stride 3C, head stride HS).
    HeadGemm({g.Qkv(args.qkv, b, 0), 3 * C, g.HS}, false, {g.Qkv(args.qkv, b, 1), 3 * C, g.HS},
             true, s, T, TT, T, T, g.HS, g.scale, 0.0f, g, stream);
    CausalSoftmaxKernel<<<blocks, kBlock, 0, stream>>>(s, p, args.bf16, g.NH * T, T);
    // out_h = P_h · V_h, written into out [B, T, C] at head h's columns.
    HeadGemm({p, T, TT}, false, {g.Qkv(args.qkv, b, 2), 3 * C, g.HS}, false, out + b * T * C, C,
             g.HS, T, g.HS, T, 1.0f, 0.0f, g, stream);
  }
}

void AttentionBackwardGemm(const AttentionArgs& args, const float* dout, const void* probs,
                           const AttentionGemmScratch& scratch, float* dqkv, Stream stream) {
  const GemmGeometry g(args);
  const int64_t T = g.T, C = g.C, TT = g.T * g.T;
  const int64_t blocks = RowBlocks(g.NH * T);
  if (blocks == 0 || args.batch == 0) return;
  // dout as the products read it: bf16 where qkv is.
  if (args.bf16) {
    Convert(dout, ElemType::kF32, scratch.dout16, ElemType::kBF16, args.batch * T * C, stream);
  }
  const void* dy = args.bf16 ? scratch.dout16 : static_cast<const void*>(dout);
  for (int64_t b = 0; b < args.batch; ++b) {
    const void* p = static_cast<const char*>(probs) + g.Probs(b) * g.es;
    const void* dyb = static_cast<const char*>(dy) + b * T * C * g.es;
    float* dq = dqkv + b * T * 3 * C;
    // dP_h = dO_h · V_hᵀ
    HeadGemm({dyb, C, g.HS}, false, {g.Qkv(args.qkv, b, 2), 3 * C, g.HS}, true, scratch.dscores, T,
             TT, T, T, g.HS, 1.0f, 0.0f, g, stream);
    // dV_h += P_hᵀ · dO_h
    HeadGemm({p, T, TT}, true, {dyb, C, g.HS}, false, dq + 2 * C, 3 * C, g.HS, T, g.HS, T, 1.0f,
             1.0f, g, stream);
    SoftmaxBackwardKernel<<<blocks, kBlock, 0, stream>>>(
        p, scratch.dscores, static_cast<uint16_t*>(scratch.ds16), args.bf16, g.NH * T, T, g.scale);
    const void* ds = args.bf16 ? scratch.ds16 : static_cast<const void*>(scratch.dscores);
    // dQ_h += dS_h · K_h and dK_h += dS_hᵀ · Q_h (the scale is in dS).
    HeadGemm({ds, T, TT}, false, {g.Qkv(args.qkv, b, 1), 3 * C, g.HS}, false, dq, 3 * C, g.HS, T,
             g.HS, T, 1.0f, 1.0f, g, stream);
    HeadGemm({ds, T, TT}, true, {g.Qkv(args.qkv, b, 0), 3 * C, g.HS}, false, dq + C, 3 * C, g.HS, T,
             g.HS, T, 1.0f, 1.0f, g, stream);
  }
}

}  // namespace loom::runtime::kernels::cuda
