#include "runtime/kernels/adamw.h"

#include <cmath>

#include "runtime/kernels/cpu/cpu_kernels.h"
#include "runtime/parallel.h"
#include "runtime/vectorize.h"

namespace loom::runtime::kernels::cpu {
namespace {

LOOM_VECTORIZED void AdamWSpan(const AdamWStep& k, float* p, const float* g, float* m, float* v,
                               int64_t n) {
  for (int64_t i = 0; i < n; ++i) AdamWElement(k, p[i], g[i], m[i], v[i]);
}

LOOM_VECTORIZED void SgdSpan(const SgdStep& k, float* p, const float* g, float* buffer, int64_t n) {
  for (int64_t i = 0; i < n; ++i) SgdElement(k, p[i], g[i], buffer[i]);
}

}  // namespace

void AdamWUpdate(Tensor& master, const Tensor& grad, Tensor& m, Tensor& v,
                 const AdamWConfig& config, int64_t step, Tensor* copy_out) {
  float* pp = master.data<float>();
  const float* pg = grad.data<float>();
  float* pm = m.data<float>();
  float* pv = v.data<float>();
  const AdamWStep k = MakeAdamWStep(config, step);
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

void SgdUpdate(Tensor& param, const Tensor& grad, Tensor& buffer, const SgdStep& step) {
  float* pp = param.data<float>();
  const float* pg = grad.data<float>();
  float* pb = buffer.data<float>();
  ParallelFor(param.numel(), 8192, [&](int64_t begin, int64_t end) {
    SgdSpan(step, pp + begin, pg + begin, pb + begin, end - begin);
  });
}

}  // namespace loom::runtime::kernels::cpu
