#include <cmath>

#include "runtime/kernels/cpu/cpu_kernels.h"
#include "runtime/parallel.h"

namespace loom::runtime::kernels::cpu {

void AdamWUpdate(Tensor& master, const Tensor& grad, Tensor& m, Tensor& v,
                 const AdamWConfig& config, int64_t step, Tensor* copy_out) {
  float* pp = master.data<float>();
  const float* pg = grad.data<float>();
  float* pm = m.data<float>();
  float* pv = v.data<float>();
  const float b1 = config.beta1, b2 = config.beta2;
  const float correction1 = static_cast<float>(1.0 - std::pow(static_cast<double>(b1), step));
  const float correction2 = static_cast<float>(1.0 - std::pow(static_cast<double>(b2), step));
  const float decay = 1.0f - config.lr * config.weight_decay;
  ParallelFor(master.numel(), 8192, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      const float g = pg[i];
      const float mi = b1 * pm[i] + (1.0f - b1) * g;
      const float vi = b2 * pv[i] + (1.0f - b2) * g * g;
      pm[i] = mi;
      pv[i] = vi;
      const float mhat = mi / correction1;
      const float vhat = vi / correction2;
      pp[i] = pp[i] * decay - config.lr * mhat / (std::sqrt(vhat) + config.eps);
    }
    if (copy_out != nullptr) {
      ConvertBuffer(pp + begin, DType::kF32,
                    static_cast<char*>(copy_out->raw_data()) +
                        begin * static_cast<int64_t>(DTypeSize(copy_out->dtype())),
                    copy_out->dtype(), end - begin);
    }
  });
}

}  // namespace loom::runtime::kernels::cpu
