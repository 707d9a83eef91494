#include "runtime/kernels/activation.h"

#include "runtime/kernels/arg_check.h"
#include "runtime/kernels/cpu/cpu_kernels.h"
#include "runtime/kernels/cuda_twins.h"

namespace loom::runtime::kernels {
namespace {

void CheckSameShapeF32(const ArgCheck& check, std::initializer_list<const Tensor*> tensors) {
  const Tensor& first = **tensors.begin();
  for (const Tensor* t : tensors) {
    check.ExpectDType(*t, DType::kF32);
    check.ExpectShape(*t, first.shape());
  }
}

}  // namespace

void GeluForward(const Tensor& x, Tensor& out) {
  const ArgCheck check("GeluForward", {{"x", &x}, {"out", &out}});
  CheckSameShapeF32(check, {&x, &out});
  if (check.OnCuda()) return check.Twin(CudaTwins().gelu_forward)(x, out);
  cpu::GeluForward(x, out);
}

void BiasGeluForward(Tensor& x, const Tensor& bias, Tensor& out) {
  const ArgCheck check("BiasGeluForward", {{"x", &x}, {"bias", &bias}, {"out", &out}});
  CheckSameShapeF32(check, {&x, &out});
  check.Expect(x.rank() >= 1, "x needs at least one dimension");
  check.ExpectDType(bias, DType::kF32);
  check.ExpectShape(bias, {x.dim(-1)});
  if (check.OnCuda()) return check.Twin(CudaTwins().bias_gelu_forward)(x, bias, out);
  cpu::BiasGeluForward(x, bias, out);
}

void GeluBackward(const Tensor& dout, const Tensor& x, Tensor& dx, bool accumulate) {
  const ArgCheck check("GeluBackward", {{"dout", &dout}, {"x", &x}, {"dx", &dx}});
  CheckSameShapeF32(check, {&dout, &dx});
  check.Expect(x.dtype() == DType::kF32 || x.dtype() == DType::kBF16, "x must be f32 or bf16");
  check.ExpectShape(x, dout.shape());
  if (check.OnCuda()) return check.Twin(CudaTwins().gelu_backward)(dout, x, dx, accumulate);
  cpu::GeluBackward(dout, x, dx, accumulate);
}

void SwiGLUForward(const Tensor& gate, const Tensor& up, Tensor& out) {
  const ArgCheck check("SwiGLUForward", {{"gate", &gate}, {"up", &up}, {"out", &out}});
  CheckSameShapeF32(check, {&gate, &up, &out});
  if (check.OnCuda()) return check.Twin(CudaTwins().swiglu_forward)(gate, up, out);
  cpu::SwiGLUForward(gate, up, out);
}

void SwiGLUBackward(const Tensor& dout, const Tensor& gate, const Tensor& up, Tensor& dgate,
                    Tensor& dup) {
  const ArgCheck check(
      "SwiGLUBackward",
      {{"dout", &dout}, {"gate", &gate}, {"up", &up}, {"dgate", &dgate}, {"dup", &dup}});
  CheckSameShapeF32(check, {&gate, &dout, &up, &dgate, &dup});
  if (check.OnCuda()) return check.Twin(CudaTwins().swiglu_backward)(dout, gate, up, dgate, dup);
  cpu::SwiGLUBackward(dout, gate, up, dgate, dup);
}

}  // namespace loom::runtime::kernels
