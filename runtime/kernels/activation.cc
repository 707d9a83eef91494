#include "runtime/kernels/activation.h"

#include "runtime/kernels/arg_check.h"
#include "runtime/kernels/cpu/cpu_kernels.h"

namespace loom::runtime::kernels {
namespace {

void CheckSameShapeF32(const ArgCheck& check, std::initializer_list<const Tensor*> tensors) {
  const Tensor& first = **tensors.begin();
  for (const Tensor* t : tensors) {
    check.ExpectDType(*t, DType::kF32);
    check.ExpectShape(*t, first.shape());
  }
  check.RequireCpu();
}

}  // namespace

void GeluForward(const Tensor& x, Tensor& out) {
  CheckSameShapeF32(ArgCheck("GeluForward", {{"x", &x}, {"out", &out}}), {&x, &out});
  cpu::GeluForward(x, out);
}

void BiasGeluForward(Tensor& x, const Tensor& bias, Tensor& out) {
  const ArgCheck check("BiasGeluForward", {{"x", &x}, {"bias", &bias}, {"out", &out}});
  CheckSameShapeF32(check, {&x, &out});
  check.Expect(x.rank() >= 1, "x needs at least one dimension");
  check.ExpectDType(bias, DType::kF32);
  check.ExpectShape(bias, {x.dim(-1)});
  cpu::BiasGeluForward(x, bias, out);
}

void GeluBackward(const Tensor& dout, const Tensor& x, Tensor& dx) {
  CheckSameShapeF32(ArgCheck("GeluBackward", {{"dout", &dout}, {"x", &x}, {"dx", &dx}}),
                    {&x, &dout, &dx});
  cpu::GeluBackward(dout, x, dx);
}

void SwiGLUForward(const Tensor& gate, const Tensor& up, Tensor& out) {
  CheckSameShapeF32(ArgCheck("SwiGLUForward", {{"gate", &gate}, {"up", &up}, {"out", &out}}),
                    {&gate, &up, &out});
  cpu::SwiGLUForward(gate, up, out);
}

void SwiGLUBackward(const Tensor& dout, const Tensor& gate, const Tensor& up, Tensor& dgate,
                    Tensor& dup) {
  CheckSameShapeF32(
      ArgCheck("SwiGLUBackward",
               {{"dout", &dout}, {"gate", &gate}, {"up", &up}, {"dgate", &dgate}, {"dup", &dup}}),
      {&gate, &dout, &up, &dgate, &dup});
  cpu::SwiGLUBackward(dout, gate, up, dgate, dup);
}

}  // namespace loom::runtime::kernels
