#include "runtime/kernels/cuda/cuda_kernels.h"
#include "runtime/kernels/cuda/launch.h"

namespace loom::runtime::kernels::cuda {
namespace {

// The CPU twin's constants (runtime/kernels/cpu/activation.cc).
constexpr float kGeluScale = 0.7978845608028654f;  // √(2/π)
constexpr float kGeluCubic = 0.044715f;

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
    out[i] = 0.5f * v * (1.0f + tanhf(kGeluScale * (v + kGeluCubic * v * v * v)));
  }
}

__global__ void GeluBackwardKernel(const float* dout, const float* x, float* dx, int64_t n) {
  for (int64_t i = FirstIndex(blockIdx.x, blockDim.x, threadIdx.x); i < n;
       i += Stride(gridDim.x, blockDim.x)) {
    const float v = x[i];
    const float t = tanhf(kGeluScale * (v + kGeluCubic * v * v * v));
    const float sech2 = 1.0f - t * t;
    const float grad =
        0.5f * (1.0f + t) + 0.5f * v * sech2 * kGeluScale * (1.0f + 3.0f * kGeluCubic * v * v);
    dx[i] += grad * dout[i];
  }
}

}  // namespace

void Add(const float* a, const float* b, float* out, int64_t n, Stream stream) {
  const Grid g = GridFor(n);
  if (g.blocks > 0) AddKernel<<<g.blocks, g.threads, 0, stream>>>(a, b, out, n);
}

void GeluForward(const float* x, float* out, int64_t n, Stream stream) {
  const Grid g = GridFor(n);
  if (g.blocks > 0) GeluForwardKernel<<<g.blocks, g.threads, 0, stream>>>(x, out, n);
}

void GeluBackward(const float* dout, const float* x, float* dx, int64_t n, Stream stream) {
  const Grid g = GridFor(n);
  if (g.blocks > 0) GeluBackwardKernel<<<g.blocks, g.threads, 0, stream>>>(dout, x, dx, n);
}

}  // namespace loom::runtime::kernels::cuda
