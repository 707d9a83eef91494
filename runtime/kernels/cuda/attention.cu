// Causal attention on the device (the CPU's runtime/kernels/cpu/attention.cc), written for
// correctness first: one block per (batch, head, query row) computes that row's scores into
// shared memory, its softmax (block reductions in a fixed order) and its output; backward takes
// one block per query row for dS and dQ, then one per key row for dK and dV, so every element of
// dqkv is summed by one thread in a fixed order (no atomics). On bf16 qkv and probs the CPU's
// rounding points hold: probabilities rounded to bf16 before P·V, dout and dS before the products
// that read them, softmax and its backward in f32.
#include "runtime/bf16_bits.h"
#include "runtime/kernels/cuda/block_reduce.cuh"
#include "runtime/kernels/cuda/cuda_kernels.h"
#include "runtime/kernels/cuda/launch.h"

namespace loom::runtime::kernels::cuda {
namespace {

__device__ float Bf16ToF32(uint16_t bits) {
  return __uint_as_float(static_cast<uint32_t>(bits) << 16);
}
__device__ float RoundBf16(float v) { return Bf16ToF32(F32BitsToBF16(__float_as_uint(v))); }

// Element i of an f32 or bf16 buffer, as f32.
__device__ float Load(const void* p, int64_t i, bool bf16) {
  return bf16 ? Bf16ToF32(static_cast<const uint16_t*>(p)[i]) : static_cast<const float*>(p)[i];
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
        p = Bf16ToF32(bits);
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
