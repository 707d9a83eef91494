#include "runtime/bf16_bits.h"
#include "runtime/kernels/cpu/cpu_kernels.h"
#include "runtime/kernels/cpu/fast_math.h"
#include "runtime/kernels/cpu/rows.h"
#include "runtime/kernels/gelu_formula.h"
#include "runtime/parallel.h"
#include "runtime/vectorize.h"

namespace loom::runtime::kernels::cpu {
namespace {

constexpr int64_t kGrain = 8192;

float Sigmoid(float x) { return 1.0f / (1.0f + FastExp(-x)); }

LOOM_VECTORIZED void GeluSpan(const float* x, float* out, int64_t n) {
  for (int64_t i = 0; i < n; ++i) {
    const float v = x[i];
    out[i] = GeluFromTanh(v, FastTanh(GeluInner(v)));
  }
}

float Widen(float x) { return x; }
float Widen(uint16_t bf16) { return BF16BitsToF32(bf16); }

// dx (+)= gelu'(x) · dout over x f32, or bf16 bits widened as they are read; without accumulate
// onto 0.0f, the bits of accumulating into zeros.
template <typename X>
inline void GeluBackwardLoop(const float* dout, const X* x, float* dx, int64_t n, bool accumulate) {
  if (accumulate) {
    for (int64_t i = 0; i < n; ++i) {
      const float v = Widen(x[i]);
      dx[i] += GeluGradFromTanh(v, FastTanh(GeluInner(v))) * dout[i];
    }
  } else {
    for (int64_t i = 0; i < n; ++i) {
      const float v = Widen(x[i]);
      dx[i] = 0.0f + GeluGradFromTanh(v, FastTanh(GeluInner(v))) * dout[i];
    }
  }
}

LOOM_VECTORIZED void GeluBackwardSpan(const float* dout, const float* x, float* dx, int64_t n,
                                      bool accumulate) {
  GeluBackwardLoop(dout, x, dx, n, accumulate);
}
LOOM_VECTORIZED void GeluBackwardBf16Span(const float* dout, const uint16_t* x, float* dx,
                                          int64_t n, bool accumulate) {
  GeluBackwardLoop(dout, x, dx, n, accumulate);
}

LOOM_VECTORIZED void SwiGLUSpan(const float* gate, const float* up, float* out, int64_t n) {
  for (int64_t i = 0; i < n; ++i) out[i] = gate[i] * Sigmoid(gate[i]) * up[i];
}

LOOM_VECTORIZED void SwiGLUBackwardSpan(const float* dout, const float* gate, const float* up,
                                        float* dgate, float* dup, int64_t n) {
  for (int64_t i = 0; i < n; ++i) {
    const float g = gate[i];
    const float s = Sigmoid(g);
    // d silu(g)/dg = s · (1 + g · (1 - s))
    dgate[i] += dout[i] * up[i] * s * (1.0f + g * (1.0f - s));
    dup[i] += dout[i] * g * s;
  }
}

}  // namespace

void GeluForward(const Tensor& x, Tensor& out) {
  const float* px = x.data<float>();
  float* po = out.data<float>();
  ParallelFor(x.numel(), kGrain,
              [&](int64_t begin, int64_t end) { GeluSpan(px + begin, po + begin, end - begin); });
}

void BiasGeluForward(Tensor& x, const Tensor& bias, Tensor& out) {
  const auto [rows, c] = AsRows(x);
  float* px = x.data<float>();
  float* po = out.data<float>();
  const float* pb = bias.data<float>();
  // Row by row, so each row is still in cache when GELU reads what the bias add wrote.
  ParallelFor(rows, RowGrain(c), [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) {
      AddBiasRows(px + r * c, pb, 1, c);
      GeluSpan(px + r * c, po + r * c, c);
    }
  });
}

void GeluBackward(const Tensor& dout, const Tensor& x, Tensor& dx, bool accumulate) {
  const float* pd = dout.data<float>();
  float* pdx = dx.data<float>();
  if (x.dtype() == DType::kBF16) {
    const uint16_t* px = static_cast<const uint16_t*>(x.raw_data());
    ParallelFor(x.numel(), kGrain, [&](int64_t begin, int64_t end) {
      GeluBackwardBf16Span(pd + begin, px + begin, pdx + begin, end - begin, accumulate);
    });
    return;
  }
  const float* px = x.data<float>();
  ParallelFor(x.numel(), kGrain, [&](int64_t begin, int64_t end) {
    GeluBackwardSpan(pd + begin, px + begin, pdx + begin, end - begin, accumulate);
  });
}

void SwiGLUForward(const Tensor& gate, const Tensor& up, Tensor& out) {
  const float* pg = gate.data<float>();
  const float* pu = up.data<float>();
  float* po = out.data<float>();
  ParallelFor(gate.numel(), kGrain, [&](int64_t begin, int64_t end) {
    SwiGLUSpan(pg + begin, pu + begin, po + begin, end - begin);
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
    SwiGLUBackwardSpan(pd + begin, pg + begin, pu + begin, pdg + begin, pdu + begin, end - begin);
  });
}

}  // namespace loom::runtime::kernels::cpu
