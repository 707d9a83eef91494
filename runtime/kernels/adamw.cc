#include "runtime/kernels/adamw.h"

#include <cmath>
#include <utility>

#include "absl/strings/str_cat.h"
#include "runtime/kernels/arg_check.h"
#include "runtime/kernels/cpu/cpu_kernels.h"
#include "runtime/kernels/cuda_twins.h"

namespace loom::runtime::kernels {

AdamWStep MakeAdamWStep(const AdamWConfig& c, int64_t step) {
  return {.b1 = c.beta1,
          .b2 = c.beta2,
          .correction1 = static_cast<float>(1.0 - std::pow(static_cast<double>(c.beta1), step)),
          .correction2 = static_cast<float>(1.0 - std::pow(static_cast<double>(c.beta2), step)),
          .decay = 1.0f - c.lr * c.weight_decay,
          .lr = c.lr,
          .eps = c.eps};
}

namespace {

// master, grad, m and v: f32 with one element count.
void CheckAdamWTensors(const ArgCheck& check, const Tensor& master, const Tensor& grad,
                       const Tensor& m, const Tensor& v) {
  for (const Tensor* t : std::initializer_list<const Tensor*>{&master, &grad, &m, &v}) {
    check.ExpectDType(*t, DType::kF32);
    check.Expect(t->numel() == master.numel(), "every tensor needs master's element count");
  }
}

}  // namespace

void AdamWUpdate(Tensor& master, const Tensor& grad, Tensor& m, Tensor& v,
                 const AdamWConfig& config, int64_t step, Tensor* copy_out) {
  const Tensor none;
  const Tensor& out = copy_out != nullptr ? *copy_out : none;
  ArgCheck check("AdamWUpdate",
                 {{"master", &master}, {"grad", &grad}, {"m", &m}, {"v", &v}, {"copy_out", &out}});
  CheckAdamWTensors(check, master, grad, m, v);
  if (copy_out != nullptr) {
    check.Expect(out.dtype() == DType::kBF16 || out.dtype() == DType::kF16,
                 "copy_out must be bf16 or f16");
    check.Expect(out.numel() == master.numel(), "copy_out needs master's element count");
  }
  check.Expect(step >= 1, absl::StrCat("step must be >= 1, got ", step));
  if (check.OnCuda()) {
    check.Expect(copy_out == nullptr || out.dtype() == DType::kBF16,
                 "on a CUDA device copy_out must be bf16 (f16 is not built yet)");
    return check.Twin(CudaTwins().adamw)(master, grad, m, v, config, step, copy_out);
  }
  cpu::AdamWUpdate(master, grad, m, v, config, step, copy_out);
}

void AdamWUpdateMany(std::span<const AdamWTensors> tensors, const AdamWConfig& config,
                     int64_t step) {
  if (tensors.empty()) return;
  bool on_cuda = false;
  for (size_t i = 0; i < tensors.size(); ++i) {
    const AdamWTensors& t = tensors[i];
    const Tensor& first = tensors[0].master;
    ArgCheck check("AdamWUpdateMany", {{"master", &t.master},
                                       {"grad", &t.grad},
                                       {"m", &t.m},
                                       {"v", &t.v},
                                       {"the first master", &first}});
    CheckAdamWTensors(check, t.master, t.grad, t.m, t.v);
    check.Expect(step >= 1, absl::StrCat("step must be >= 1, got ", step));
    on_cuda = check.OnCuda();  // all on one device, or the check fails naming both
  }
  if (on_cuda) {
    const ArgCheck check("AdamWUpdateMany", {{"master", &tensors[0].master}});
    return check.Twin(CudaTwins().adamw_many)(tensors, config, step);
  }
  for (const AdamWTensors& t : tensors) {
    AdamWConfig c = config;
    if (!t.decay) c.weight_decay = 0.0f;
    Tensor master = t.master, m = t.m, v = t.v;  // handles on the same storage
    cpu::AdamWUpdate(master, t.grad, m, v, c, step, nullptr);
  }
}

void SgdUpdate(Tensor& param, const Tensor& grad, Tensor& buffer, const SgdStep& step) {
  ArgCheck check("SgdUpdate", {{"param", &param}, {"grad", &grad}, {"buffer", &buffer}});
  for (const Tensor* t : std::initializer_list<const Tensor*>{&param, &grad, &buffer}) {
    check.ExpectDType(*t, DType::kF32);
    check.Expect(t->numel() == param.numel(), "every tensor needs param's element count");
  }
  if (check.OnCuda()) return check.Twin(CudaTwins().sgd)(param, grad, buffer, step);
  cpu::SgdUpdate(param, grad, buffer, step);
}

}  // namespace loom::runtime::kernels
