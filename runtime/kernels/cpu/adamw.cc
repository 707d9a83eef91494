#include <cmath>

#include "runtime/kernels/cpu/cpu_kernels.h"
#include "runtime/parallel.h"
#include "runtime/vectorize.h"

namespace loom::runtime::kernels::cpu {
namespace {

struct AdamWStep {
  float b1, b2, correction1, correction2, decay, lr, eps;
};

LOOM_VECTORIZED void AdamWSpan(const AdamWStep& k, float* p, const float* g, float* m, float* v,
                               int64_t n) {
  for (int64_t i = 0; i < n; ++i) {
    const float gi = g[i];
    const float mi = k.b1 * m[i] + (1.0f - k.b1) * gi;
    const float vi = k.b2 * v[i] + (1.0f - k.b2) * gi * gi;
    m[i] = mi;
    v[i] = vi;
    const float mhat = mi / k.correction1;
    const float vhat = vi / k.correction2;
    p[i] = p[i] * k.decay - k.lr * mhat / (std::sqrt(vhat) + k.eps);
  }
}

}  // namespace

void AdamWUpdate(Tensor& master, const Tensor& grad, Tensor& m, Tensor& v,
                 const AdamWConfig& config, int64_t step, Tensor* copy_out) {
  float* pp = master.data<float>();
  const float* pg = grad.data<float>();
  float* pm = m.data<float>();
  float* pv = v.data<float>();
  const AdamWStep k{
      .b1 = config.beta1,
      .b2 = config.beta2,
      .correction1 = static_cast<float>(1.0 - std::pow(static_cast<double>(config.beta1), step)),
      .correction2 = static_cast<float>(1.0 - std::pow(static_cast<double>(config.beta2), step)),
      .decay = 1.0f - config.lr * config.weight_decay,
      .lr = config.lr,
      .eps = config.eps};
  ParallelFor(master.numel(), 8192, [&](int64_t begin, int64_t end) {
    AdamWSpan(k, pp + begin, pg + begin, pm + begin, pv + begin, end - begin);
    if (copy_out != nullptr) {
      ConvertBuffer(pp + begin, DType::kF32,
                    static_cast<char*>(copy_out->raw_data()) +
                        begin * static_cast<int64_t>(DTypeSize(copy_out->dtype())),
                    copy_out->dtype(), end - begin);
    }
  });
}

}  // namespace loom::runtime::kernels::cpu
