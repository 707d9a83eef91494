#include <cuda_fp16.h>

#include "runtime/bf16_bits.h"
#include "runtime/kernels/cuda/column_sum.cuh"
#include "runtime/kernels/cuda/cuda_kernels.h"
#include "runtime/kernels/cuda/launch.h"
#include "runtime/kernels/gelu_formula.h"

namespace loom::runtime::kernels::cuda {
namespace {

__global__ void AddKernel(const float* a, const float* b, float* out, int64_t n) {
  for (int64_t i = FirstIndex(blockIdx.x, blockDim.x, threadIdx.x); i < n;
       i += Stride(gridDim.x, blockDim.x)) {
    out[i] = a[i] + b[i];
  }
}

__global__ void GeluForwardKernel(const float* x, float* out, int64_t n) {
  for (int64_t i = FirstIndex(blockIdx.x, blockDim.x, threadIdx.x); i < n;
       i += Stride(gridDim.x, blockDim.x)) {
    const float v = x[i];
    out[i] = GeluFromTanh(v, tanhf(GeluInner(v)));
  }
}

__device__ inline float LoadF32(const float* x, int64_t i) { return x[i]; }
__device__ inline float LoadF32(const uint16_t* x, int64_t i) { return BF16BitsToF32(x[i]); }

// x f32, or bf16 bits widened as they are read.
template <typename X>
__global__ void GeluBackwardKernel(const float* dout, const X* x, float* dx, int64_t n,
                                   bool accumulate) {
  for (int64_t i = FirstIndex(blockIdx.x, blockDim.x, threadIdx.x); i < n;
       i += Stride(gridDim.x, blockDim.x)) {
    const float v = LoadF32(x, i);
    const float base = accumulate ? dx[i] : 0.0f;
    dx[i] = base + GeluGradFromTanh(v, tanhf(GeluInner(v))) * dout[i];
  }
}

__global__ void AdamWKernel(AdamWArgs a, AdamWStep k, int64_t n) {
  for (int64_t i = FirstIndex(blockIdx.x, blockDim.x, threadIdx.x); i < n;
       i += Stride(gridDim.x, blockDim.x)) {
    AdamWElement(k, a.master[i], a.grad[i], a.m[i], a.v[i]);
    if (a.copy_bf16 != nullptr) a.copy_bf16[i] = F32BitsToBF16(__float_as_uint(a.master[i]));
  }
}

__global__ void AdamWManyKernel(AdamWManyArgs a, AdamWStep k) {
  const int slot = a.chunk_slot[blockIdx.x];
  const int64_t begin = static_cast<int64_t>(a.chunk_index[blockIdx.x]) * kLaunchChunk;
  const int64_t end = begin + kLaunchChunk < a.n[slot] ? begin + kLaunchChunk : a.n[slot];
  k.decay = a.decay[slot];
  float *p = a.master[slot], *m = a.m[slot], *v = a.v[slot];
  const float* g = a.grad[slot];
  for (int64_t i = begin + threadIdx.x; i < end; i += blockDim.x)
    AdamWElement(k, p[i], g[i], m[i], v[i]);
}

__device__ float Sigmoid(float x) { return 1.0f / (1.0f + expf(-x)); }

__global__ void SwiGLUForwardKernel(const float* gate, const float* up, float* out, int64_t n) {
  for (int64_t i = FirstIndex(blockIdx.x, blockDim.x, threadIdx.x); i < n;
       i += Stride(gridDim.x, blockDim.x)) {
    out[i] = gate[i] * Sigmoid(gate[i]) * up[i];
  }
}

// d silu(g)/dg = s · (1 + g · (1 - s)), as the CPU kernel.
__global__ void SwiGLUBackwardKernel(const float* dout, const float* gate, const float* up,
                                     float* dgate, float* dup, int64_t n) {
  for (int64_t i = FirstIndex(blockIdx.x, blockDim.x, threadIdx.x); i < n;
       i += Stride(gridDim.x, blockDim.x)) {
    const float g = gate[i], s = Sigmoid(g);
    dgate[i] += dout[i] * up[i] * s * (1.0f + g * (1.0f - s));
    dup[i] += dout[i] * g * s;
  }
}

__global__ void SgdKernel(float* p, const float* g, float* buffer, SgdStep k, int64_t n) {
  for (int64_t i = FirstIndex(blockIdx.x, blockDim.x, threadIdx.x); i < n;
       i += Stride(gridDim.x, blockDim.x)) {
    SgdElement(k, p[i], g[i], buffer[i]);
  }
}

__global__ void ScaleKernel(float* x, float factor, int64_t n) {
  for (int64_t i = FirstIndex(blockIdx.x, blockDim.x, threadIdx.x); i < n;
       i += Stride(gridDim.x, blockDim.x)) {
    x[i] *= factor;
  }
}

__device__ float LoadAsF32(const void* x, ElemType type, int64_t i);

__device__ void StoreFromF32(void* x, ElemType type, int64_t i, float v) {
  switch (type) {
    case ElemType::kBF16:
      static_cast<uint16_t*>(x)[i] = F32BitsToBF16(__float_as_uint(v));
      break;
    case ElemType::kF16:
      static_cast<__half*>(x)[i] = __float2half_rn(v);
      break;
    default:
      static_cast<float*>(x)[i] = v;
  }
}

__global__ void ConvertKernel(const void* src, ElemType from, void* dst, ElemType to, int64_t n) {
  for (int64_t i = FirstIndex(blockIdx.x, blockDim.x, threadIdx.x); i < n;
       i += Stride(gridDim.x, blockDim.x)) {
    StoreFromF32(dst, to, i, LoadAsF32(src, from, i));
  }
}

// x = widen(narrow(x)): the value a 16-bit activation would hold, kept in f32.
__global__ void RoundKernel(float* x, ElemType type, int64_t n) {
  for (int64_t i = FirstIndex(blockIdx.x, blockDim.x, threadIdx.x); i < n;
       i += Stride(gridDim.x, blockDim.x)) {
    if (type == ElemType::kBF16) {
      x[i] = __uint_as_float(static_cast<uint32_t>(F32BitsToBF16(__float_as_uint(x[i]))) << 16);
    } else {
      x[i] = __half2float(__float2half_rn(x[i]));
    }
  }
}

__global__ void BiasAddKernel(float* x, const float* bias, int64_t cols, int64_t n) {
  for (int64_t i = FirstIndex(blockIdx.x, blockDim.x, threadIdx.x); i < n;
       i += Stride(gridDim.x, blockDim.x)) {
    x[i] += bias[i % cols];
  }
}

// x += bias, then out = gelu(x) (the CPU's BiasGeluForward: x keeps the pre-activation).
__global__ void BiasGeluKernel(float* x, const float* bias, float* out, int64_t cols, int64_t n) {
  for (int64_t i = FirstIndex(blockIdx.x, blockDim.x, threadIdx.x); i < n;
       i += Stride(gridDim.x, blockDim.x)) {
    const float v = x[i] + bias[i % cols];
    x[i] = v;
    out[i] = GeluFromTanh(v, tanhf(GeluInner(v)));
  }
}

// Every id in [0, limit), else the first offender (by whichever thread gets there first) is
// recorded: record = {what, position, value, limit}, what != 0 once set.
__global__ void CheckIndicesKernel(const int32_t* ids, int64_t n, int64_t limit,
                                   unsigned long long what, long long* record) {
  for (int64_t i = FirstIndex(blockIdx.x, blockDim.x, threadIdx.x); i < n;
       i += Stride(gridDim.x, blockDim.x)) {
    const int32_t id = ids[i];
    if (id >= 0 && id < limit) continue;
    if (atomicCAS(reinterpret_cast<unsigned long long*>(record), 0ull, what) == 0ull) {
      record[1] = i;
      record[2] = id;
      record[3] = limit;
    }
  }
}

__device__ float LoadAsF32(const void* x, ElemType type, int64_t i) {
  switch (type) {
    case ElemType::kBF16:
      return LoadF32(static_cast<const uint16_t*>(x), i);
    case ElemType::kF16:
      return __half2float(static_cast<const __half*>(x)[i]);
    default:
      return static_cast<const float*>(x)[i];
  }
}

// One thread per block of kSumOfSquaresBlock elements, in the CPU's order (SumOfSquaresOfBlock).
__global__ void BlockSquaresKernel(const void* x, ElemType type, int64_t n, double* partial) {
  const int64_t blocks = SumOfSquaresBlocks(n);
  for (int64_t blk = FirstIndex(blockIdx.x, blockDim.x, threadIdx.x); blk < blocks;
       blk += Stride(gridDim.x, blockDim.x)) {
    const int64_t stop = n < (blk + 1) * kSumOfSquaresBlock ? n : (blk + 1) * kSumOfSquaresBlock;
    partial[blk] = SumOfSquaresOfBlock(blk * kSumOfSquaresBlock, stop, [&](int64_t i) {
      return static_cast<double>(LoadAsF32(x, type, i));
    });
  }
}

__global__ void TotalKernel(const double* partial, int64_t blocks, double* total) {
  double t = 0.0;
  for (int64_t b = 0; b < blocks; ++b) t += partial[b];
  *total = t;
}

__global__ void SpinKernel(int64_t cycles) {
  const long long start = clock64();
  while (clock64() - start < cycles) {
  }
}

}  // namespace

void SpinForTesting(int64_t cycles, Stream stream) { SpinKernel<<<1, 1, 0, stream>>>(cycles); }

void SumOfSquares(const void* x, ElemType type, int64_t n, double* partial, double* total,
                  Stream stream) {
  const int64_t blocks = SumOfSquaresBlocks(n);
  const Grid g = GridFor(blocks);
  if (g.blocks > 0) BlockSquaresKernel<<<g.blocks, g.threads, 0, stream>>>(x, type, n, partial);
  TotalKernel<<<1, 1, 0, stream>>>(partial, blocks, total);
}

void AdamWUpdate(const AdamWArgs& args, const AdamWStep& step, int64_t n, Stream stream) {
  const Grid g = GridFor(n);
  if (g.blocks > 0) AdamWKernel<<<g.blocks, g.threads, 0, stream>>>(args, step, n);
}

void AdamWUpdateMany(const AdamWManyArgs& args, const AdamWStep& step, Stream stream) {
  if (args.chunks > 0) AdamWManyKernel<<<args.chunks, kBlock, 0, stream>>>(args, step);
}

void Add(const float* a, const float* b, float* out, int64_t n, Stream stream) {
  const Grid g = GridFor(n);
  if (g.blocks > 0) AddKernel<<<g.blocks, g.threads, 0, stream>>>(a, b, out, n);
}

void GeluForward(const float* x, float* out, int64_t n, Stream stream) {
  const Grid g = GridFor(n);
  if (g.blocks > 0) GeluForwardKernel<<<g.blocks, g.threads, 0, stream>>>(x, out, n);
}

void SwiGLUForward(const float* gate, const float* up, float* out, int64_t n, Stream stream) {
  const Grid g = GridFor(n);
  if (g.blocks > 0) SwiGLUForwardKernel<<<g.blocks, g.threads, 0, stream>>>(gate, up, out, n);
}

void SwiGLUBackward(const float* dout, const float* gate, const float* up, float* dgate, float* dup,
                    int64_t n, Stream stream) {
  const Grid g = GridFor(n);
  if (g.blocks > 0) {
    SwiGLUBackwardKernel<<<g.blocks, g.threads, 0, stream>>>(dout, gate, up, dgate, dup, n);
  }
}

void SgdUpdate(float* param, const float* grad, float* buffer, const SgdStep& step, int64_t n,
               Stream stream) {
  const Grid g = GridFor(n);
  if (g.blocks > 0) SgdKernel<<<g.blocks, g.threads, 0, stream>>>(param, grad, buffer, step, n);
}

void Scale(float* x, float factor, int64_t n, Stream stream) {
  const Grid g = GridFor(n);
  if (g.blocks > 0) ScaleKernel<<<g.blocks, g.threads, 0, stream>>>(x, factor, n);
}

void Convert(const void* src, ElemType from, void* dst, ElemType to, int64_t n, Stream stream) {
  const Grid g = GridFor(n);
  if (g.blocks > 0) ConvertKernel<<<g.blocks, g.threads, 0, stream>>>(src, from, dst, to, n);
}

void RoundTo(float* x, ElemType type, int64_t n, Stream stream) {
  const Grid g = GridFor(n);
  if (g.blocks > 0) RoundKernel<<<g.blocks, g.threads, 0, stream>>>(x, type, n);
}

void BiasAdd(float* x, const float* bias, int64_t rows, int64_t cols, Stream stream) {
  const Grid g = GridFor(rows * cols);
  if (g.blocks > 0) BiasAddKernel<<<g.blocks, g.threads, 0, stream>>>(x, bias, cols, rows * cols);
}

void BiasGeluForward(float* x, const float* bias, float* out, int64_t rows, int64_t cols,
                     Stream stream) {
  const Grid g = GridFor(rows * cols);
  if (g.blocks > 0) {
    BiasGeluKernel<<<g.blocks, g.threads, 0, stream>>>(x, bias, out, cols, rows * cols);
  }
}

void BiasBackward(const float* dout, float* dbias, int64_t rows, int64_t cols, float* partial,
                  Stream stream) {
  ColumnSums(MatrixTerm{dout, cols}, rows, cols, partial, dbias, stream);
}

void CheckIndices(const int32_t* ids, int64_t n, int64_t limit, int64_t what, int64_t* record,
                  Stream stream) {
  const Grid g = GridFor(n);
  if (g.blocks > 0) {
    CheckIndicesKernel<<<g.blocks, g.threads, 0, stream>>>(
        ids, n, limit, static_cast<unsigned long long>(what), reinterpret_cast<long long*>(record));
  }
}

void GeluBackward(const float* dout, const float* x, float* dx, int64_t n, Stream stream,
                  bool accumulate) {
  const Grid g = GridFor(n);
  if (g.blocks > 0) {
    GeluBackwardKernel<<<g.blocks, g.threads, 0, stream>>>(dout, x, dx, n, accumulate);
  }
}

void GeluBackwardBf16(const float* dout, const uint16_t* x, float* dx, int64_t n, Stream stream,
                      bool accumulate) {
  const Grid g = GridFor(n);
  if (g.blocks > 0) {
    GeluBackwardKernel<<<g.blocks, g.threads, 0, stream>>>(dout, x, dx, n, accumulate);
  }
}

}  // namespace loom::runtime::kernels::cuda
