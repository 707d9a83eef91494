#include "runtime/kernels/bias_add.h"

#include "runtime/kernels/arg_check.h"
#include "runtime/kernels/cpu/cpu_kernels.h"

namespace loom::runtime::kernels {
namespace {

void CheckBiasArgs(const ArgCheck& check, const Tensor& x, const Tensor& bias) {
  check.ExpectDType(x, DType::kF32);
  check.ExpectDType(bias, DType::kF32);
  check.Expect(x.rank() >= 1, "the input needs at least one dimension");
  check.ExpectShape(bias, {x.dim(-1)});
  check.RequireCpu();
}

}  // namespace

void BiasAdd(Tensor& x, const Tensor& bias) {
  CheckBiasArgs(ArgCheck("BiasAdd", {{"x", &x}, {"bias", &bias}}), x, bias);
  cpu::BiasAdd(x, bias);
}

void BiasBackward(const Tensor& dout, Tensor& dbias) {
  CheckBiasArgs(ArgCheck("BiasBackward", {{"dout", &dout}, {"dbias", &dbias}}), dout, dbias);
  cpu::BiasBackward(dout, dbias);
}

}  // namespace loom::runtime::kernels
