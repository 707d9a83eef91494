#include <cmath>

#include "runtime/kernels/cpu/cpu_kernels.h"
#include "runtime/kernels/cpu/fast_math.h"
#include "runtime/parallel.h"

namespace loom::runtime::kernels::cpu {
namespace {

constexpr float kGeluScale = 0.7978845608028654f;  // √(2/π)
constexpr int64_t kGrain = 8192;

float Sigmoid(float x) { return 1.0f / (1.0f + std::exp(-x)); }

}  // namespace

void GeluForward(const Tensor& x, Tensor& out) {
  const float* px = x.data<float>();
  float* po = out.data<float>();
  ParallelFor(x.numel(), kGrain, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      const float v = px[i];
      po[i] = 0.5f * v * (1.0f + FastTanh(kGeluScale * (v + 0.044715f * v * v * v)));
    }
  });
}

void GeluBackward(const Tensor& dout, const Tensor& x, Tensor& dx) {
  const float* pd = dout.data<float>();
  const float* px = x.data<float>();
  float* pdx = dx.data<float>();
  ParallelFor(x.numel(), kGrain, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      const float v = px[i];
      const float u = kGeluScale * (v + 0.044715f * v * v * v);
      const float t = FastTanh(u);
      const float sech2 = 1.0f - t * t;
      const float grad =
          0.5f * (1.0f + t) + 0.5f * v * sech2 * kGeluScale * (1.0f + 3.0f * 0.044715f * v * v);
      pdx[i] += grad * pd[i];
    }
  });
}

void SwiGLUForward(const Tensor& gate, const Tensor& up, Tensor& out) {
  const float* pg = gate.data<float>();
  const float* pu = up.data<float>();
  float* po = out.data<float>();
  ParallelFor(gate.numel(), kGrain, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) po[i] = pg[i] * Sigmoid(pg[i]) * pu[i];
  });
}

void SwiGLUBackward(const Tensor& dout, const Tensor& gate, const Tensor& up, Tensor& dgate,
                    Tensor& dup) {
  const float* pd = dout.data<float>();
  const float* pg = gate.data<float>();
  const float* pu = up.data<float>();
  float* pdg = dgate.data<float>();
  float* pdu = dup.data<float>();
  ParallelFor(gate.numel(), kGrain, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      const float g = pg[i];
      const float s = Sigmoid(g);
      // d silu(g)/dg = s · (1 + g · (1 - s))
      pdg[i] += pd[i] * pu[i] * s * (1.0f + g * (1.0f - s));
      pdu[i] += pd[i] * g * s;
    }
  });
}

}  // namespace loom::runtime::kernels::cpu
