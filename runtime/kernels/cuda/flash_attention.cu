// Causal attention in the flash form on the device (runtime/kernels/attention.h; the CPU's
// cpu/flash_attention.cc is the reference): FlashAttention-2's schedule in f32 on CUDA cores, for
// head sizes of 16, 32 and 64 (a template per size, so a row lives in registers).
//
// Forward: a block of 64 threads takes 64 query rows of one (batch, head), a row per thread with
// q and its output accumulator in registers; the keys and values before the block's last row come
// through shared memory 32 rows at a time (every thread reads the same key at once: a broadcast),
// and each row keeps an online softmax (running maximum m and sum l, the accumulator rescaled when
// the maximum grows). It writes out = acc / l and lse = m + log l.
// Backward: delta_i = dout_i · out_i (one thread per row); then dQ with the forward's schedule
// (each row recomputes p_ij = exp(s_ij - lse_i) and adds ds_ij · k_j), and dK, dV with the
// transposed one: a block of 32 threads takes 32 key rows (its own k and v rows in padded shared
// memory, dk and dv in registers) and the query rows at or after them come through shared memory.
// Every output element is written by one thread and its sums run in index order: deterministic,
// no atomics. The CPU sums the softmax once per row instead of online, so the two agree within
// f32 rounding, not bitwise.
#include <cmath>
#include <cstdio>
#include <cstdlib>

#include "runtime/bf16_bits.h"
#include "runtime/kernels/cuda/cuda_kernels.h"
#include "runtime/kernels/cuda/launch.h"

namespace loom::runtime::kernels::cuda {
namespace {

constexpr int kQueryRows = 64;  // forward and dQ: query rows (threads) per block
constexpr int kKeyTile = 32;    // forward and dQ: keys per shared tile
constexpr int kKeyRows = 32;    // dK/dV: key rows (threads) per block

__device__ inline float Load(const float* p, int64_t i) { return p[i]; }
__device__ inline float Load(const uint16_t* p, int64_t i) { return BF16BitsToF32(p[i]); }

// Element offsets: row `row` of (batch, head) in qkv's part (0 q, 1 k, 2 v); in [B, T, C] rows;
// in [B, NH, T].
struct Layout {
  int64_t seq, channels, heads, head_dim;
  __device__ int64_t Qkv(int64_t batch, int64_t head, int64_t row, int part) const {
    return (batch * seq + row) * 3 * channels + part * channels + head * head_dim;
  }
  __device__ int64_t Rows(int64_t batch, int64_t head, int64_t row) const {
    return (batch * seq + row) * channels + head * head_dim;
  }
  __device__ int64_t Row(int64_t batch, int64_t head, int64_t row) const {
    return (batch * heads + head) * seq + row;
  }
};

Layout LayoutOf(const AttentionArgs& a) {
  return {a.seq, a.channels, a.heads, a.channels / a.heads};
}

// Keys [k0, k0 + n) of (batch, head) into shared tiles: ks (and vs unless null), row stride D.
template <int D, typename T>
__device__ void LoadKeys(const T* qkv, const Layout& g, int64_t batch, int64_t head, int64_t k0,
                         int n, float (*ks)[D], float (*vs)[D]) {
  for (int e = threadIdx.x; e < n * D; e += blockDim.x) {
    const int j = e / D, d = e % D;
    ks[j][d] = Load(qkv, g.Qkv(batch, head, k0 + j, 1) + d);
    vs[j][d] = Load(qkv, g.Qkv(batch, head, k0 + j, 2) + d);
  }
}

template <int D, typename T>
__global__ void ForwardKernel(const T* qkv, Layout g, float scale, float* out, float* lse) {
  __shared__ float ks[kKeyTile][D], vs[kKeyTile][D];
  const int64_t batch = blockIdx.x / g.heads, head = blockIdx.x % g.heads;
  const int64_t q0 = static_cast<int64_t>(blockIdx.y) * kQueryRows, i = q0 + threadIdx.x;
  const bool live = i < g.seq;
  float q[D], acc[D];
  float m = -INFINITY, l = 0.0f;
#pragma unroll
  for (int d = 0; d < D; ++d) {
    q[d] = live ? Load(qkv, g.Qkv(batch, head, i, 0) + d) : 0.0f;
    acc[d] = 0.0f;
  }
  const int64_t last = q0 + kQueryRows < g.seq ? q0 + kQueryRows : g.seq;  // keys before it
  for (int64_t k0 = 0; k0 < last; k0 += kKeyTile) {
    const int n = static_cast<int>(last - k0 < kKeyTile ? last - k0 : kKeyTile);
    LoadKeys<D>(qkv, g, batch, head, k0, n, ks, vs);
    __syncthreads();
    for (int j = 0; live && j < n && k0 + j <= i; ++j) {
      float s = 0.0f;
#pragma unroll
      for (int d = 0; d < D; ++d) s += q[d] * ks[j][d];
      s *= scale;
      if (s > m) {  // a new maximum: rescale what was summed under the old one
        const float correction = expf(m - s);
        l = l * correction + 1.0f;
#pragma unroll
        for (int d = 0; d < D; ++d) acc[d] = acc[d] * correction + vs[j][d];
        m = s;
      } else {
        const float p = expf(s - m);
        l += p;
#pragma unroll
        for (int d = 0; d < D; ++d) acc[d] += p * vs[j][d];
      }
    }
    __syncthreads();
  }
  if (!live) return;
  float* o = out + g.Rows(batch, head, i);
#pragma unroll
  for (int d = 0; d < D; ++d) o[d] = acc[d] / l;
  lse[g.Row(batch, head, i)] = m + logf(l);
}

// delta_i = dout_i · out_i for every (batch, head, row).
__global__ void DeltaKernel(const float* dout, const float* out, Layout g, int64_t rows,
                            float* delta) {
  for (int64_t r = FirstIndex(blockIdx.x, blockDim.x, threadIdx.x); r < rows;
       r += Stride(gridDim.x, blockDim.x)) {
    const int64_t row = r % g.seq, head = (r / g.seq) % g.heads, batch = r / (g.seq * g.heads);
    const int64_t at = g.Rows(batch, head, row);
    float s = 0.0f;
    for (int64_t d = 0; d < g.head_dim; ++d) s += dout[at + d] * out[at + d];
    delta[r] = s;
  }
}

template <int D, typename T>
__global__ void DqKernel(const T* qkv, const float* dout, const float* lse, const float* delta,
                         Layout g, float scale, float* dqkv) {
  __shared__ float ks[kKeyTile][D], vs[kKeyTile][D];
  const int64_t batch = blockIdx.x / g.heads, head = blockIdx.x % g.heads;
  const int64_t q0 = static_cast<int64_t>(blockIdx.y) * kQueryRows, i = q0 + threadIdx.x;
  const bool live = i < g.seq;
  float q[D], dq[D], dout_i[D];
#pragma unroll
  for (int d = 0; d < D; ++d) {
    q[d] = live ? Load(qkv, g.Qkv(batch, head, i, 0) + d) : 0.0f;
    dout_i[d] = live ? dout[g.Rows(batch, head, i) + d] : 0.0f;
    dq[d] = 0.0f;
  }
  const float row_lse = live ? lse[g.Row(batch, head, i)] : 0.0f;
  const float row_delta = live ? delta[g.Row(batch, head, i)] : 0.0f;
  const int64_t last = q0 + kQueryRows < g.seq ? q0 + kQueryRows : g.seq;
  for (int64_t k0 = 0; k0 < last; k0 += kKeyTile) {
    const int n = static_cast<int>(last - k0 < kKeyTile ? last - k0 : kKeyTile);
    LoadKeys<D>(qkv, g, batch, head, k0, n, ks, vs);
    __syncthreads();
    for (int j = 0; live && j < n && k0 + j <= i; ++j) {
      float s = 0.0f, dp = 0.0f;
#pragma unroll
      for (int d = 0; d < D; ++d) {
        s += q[d] * ks[j][d];
        dp += dout_i[d] * vs[j][d];
      }
      const float p = expf(s * scale - row_lse);
      const float ds = p * (dp - row_delta) * scale;
#pragma unroll
      for (int d = 0; d < D; ++d) dq[d] += ds * ks[j][d];
    }
    __syncthreads();
  }
  if (!live) return;
  float* to = dqkv + g.Qkv(batch, head, i, 0);
#pragma unroll
  for (int d = 0; d < D; ++d) to[d] += dq[d];
}

template <int D, typename T>
__global__ void DkvKernel(const T* qkv, const float* dout, const float* lse, const float* delta,
                          Layout g, float scale, float* dqkv) {
  constexpr int kTile = 2048 / D;  // query rows per shared tile: 16 KiB of q and dout
  __shared__ float qs[kTile][D], dos[kTile][D], lses[kTile], deltas[kTile];
  __shared__ float own_k[kKeyRows][D + 1], own_v[kKeyRows][D + 1];  // padded: no bank conflicts
  const int64_t batch = blockIdx.x / g.heads, head = blockIdx.x % g.heads;
  const int64_t j0 = static_cast<int64_t>(blockIdx.y) * kKeyRows, j = j0 + threadIdx.x;
  const int t = threadIdx.x;
  const bool live = j < g.seq;
  for (int d = 0; d < D; ++d) {
    own_k[t][d] = live ? Load(qkv, g.Qkv(batch, head, j, 1) + d) : 0.0f;
    own_v[t][d] = live ? Load(qkv, g.Qkv(batch, head, j, 2) + d) : 0.0f;
  }
  float dk[D], dv[D];
#pragma unroll
  for (int d = 0; d < D; ++d) dk[d] = dv[d] = 0.0f;
  for (int64_t i0 = j0; i0 < g.seq; i0 += kTile) {  // the queries that see these keys
    const int n = static_cast<int>(g.seq - i0 < kTile ? g.seq - i0 : kTile);
    for (int e = t; e < n * D; e += blockDim.x) {
      const int r = e / D, d = e % D;
      qs[r][d] = Load(qkv, g.Qkv(batch, head, i0 + r, 0) + d);
      dos[r][d] = dout[g.Rows(batch, head, i0 + r) + d];
    }
    for (int r = t; r < n; r += blockDim.x) {
      lses[r] = lse[g.Row(batch, head, i0 + r)];
      deltas[r] = delta[g.Row(batch, head, i0 + r)];
    }
    __syncthreads();
    for (int r = 0; live && r < n; ++r) {
      if (i0 + r < j) continue;  // causal: query i sees key j only when j <= i
      float s = 0.0f, dp = 0.0f;
#pragma unroll
      for (int d = 0; d < D; ++d) {
        s += qs[r][d] * own_k[t][d];
        dp += dos[r][d] * own_v[t][d];
      }
      const float p = expf(s * scale - lses[r]);
      const float ds = p * (dp - deltas[r]) * scale;
#pragma unroll
      for (int d = 0; d < D; ++d) {
        dv[d] += p * dos[r][d];
        dk[d] += ds * qs[r][d];
      }
    }
    __syncthreads();
  }
  if (!live) return;
  float* to_k = dqkv + g.Qkv(batch, head, j, 1);
  float* to_v = dqkv + g.Qkv(batch, head, j, 2);
#pragma unroll
  for (int d = 0; d < D; ++d) {
    to_k[d] += dk[d];
    to_v[d] += dv[d];
  }
}

// Blocks: x = (batch, head) pairs (up to 2^31 - 1), y = row blocks (up to 65535: sequences of
// 4M tokens forward, 2M backward).
dim3 GridOf(const AttentionArgs& a, int rows_per_block) {
  return dim3(static_cast<unsigned>(a.batch * a.heads),
              static_cast<unsigned>((a.seq + rows_per_block - 1) / rows_per_block));
}

template <int D, typename T>
void Forward(const AttentionArgs& a, const T* qkv, float* out, float* lse, Stream stream) {
  const float scale = 1.0f / sqrtf(static_cast<float>(D));
  ForwardKernel<D>
      <<<GridOf(a, kQueryRows), kQueryRows, 0, stream>>>(qkv, LayoutOf(a), scale, out, lse);
}

template <int D, typename T>
void Backward(const AttentionArgs& a, const T* qkv, const float* dout, const float* lse,
              const float* delta, float* dqkv, Stream stream) {
  const float scale = 1.0f / sqrtf(static_cast<float>(D));
  DqKernel<D><<<GridOf(a, kQueryRows), kQueryRows, 0, stream>>>(qkv, dout, lse, delta, LayoutOf(a),
                                                                scale, dqkv);
  DkvKernel<D><<<GridOf(a, kKeyRows), kKeyRows, 0, stream>>>(qkv, dout, lse, delta, LayoutOf(a),
                                                             scale, dqkv);
}

// The kernels for head size D on qkv's element type.
template <int D>
void ForwardFor(const AttentionArgs& a, float* out, float* lse, Stream stream) {
  if (a.bf16) return Forward<D>(a, static_cast<const uint16_t*>(a.qkv), out, lse, stream);
  Forward<D>(a, static_cast<const float*>(a.qkv), out, lse, stream);
}

template <int D>
void BackwardFor(const AttentionArgs& a, const float* dout, const float* lse, const float* delta,
                 float* dqkv, Stream stream) {
  if (a.bf16) {
    return Backward<D>(a, static_cast<const uint16_t*>(a.qkv), dout, lse, delta, dqkv, stream);
  }
  Backward<D>(a, static_cast<const float*>(a.qkv), dout, lse, delta, dqkv, stream);
}

[[noreturn]] void Unsupported(const AttentionArgs& a) {
  std::fprintf(stderr, "FlashAttention on CUDA: head_dim %lld is not built (16, 32 or 64)\n",
               static_cast<long long>(a.channels / a.heads));
  std::abort();
}

}  // namespace

bool FlashAttentionSupports(int64_t head_dim) {
  return head_dim == 16 || head_dim == 32 || head_dim == 64;
}

void FlashAttentionForward(const AttentionArgs& a, float* out, float* lse, Stream stream) {
  if (a.batch * a.seq == 0) return;
  switch (a.channels / a.heads) {
    case 16:
      return ForwardFor<16>(a, out, lse, stream);
    case 32:
      return ForwardFor<32>(a, out, lse, stream);
    case 64:
      return ForwardFor<64>(a, out, lse, stream);
    default:
      Unsupported(a);
  }
}

void FlashAttentionBackward(const AttentionArgs& a, const float* dout, const float* out,
                            const float* lse, float* delta, float* dqkv, Stream stream) {
  if (a.batch * a.seq == 0) return;
  const int64_t rows = a.batch * a.heads * a.seq;
  const Grid g = GridFor(rows);
  DeltaKernel<<<g.blocks, g.threads, 0, stream>>>(dout, out, LayoutOf(a), rows, delta);
  switch (a.channels / a.heads) {
    case 16:
      return BackwardFor<16>(a, dout, lse, delta, dqkv, stream);
    case 32:
      return BackwardFor<32>(a, dout, lse, delta, dqkv, stream);
    case 64:
      return BackwardFor<64>(a, dout, lse, delta, dqkv, stream);
    default:
      Unsupported(a);
  }
}

}  // namespace loom::runtime::kernels::cuda
