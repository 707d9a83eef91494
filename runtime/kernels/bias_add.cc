#include "runtime/kernels/bias_add.h"

#include "runtime/kernels/arg_check.h"
#include "runtime/kernels/cpu/cpu_kernels.h"
#include "runtime/kernels/cuda_twins.h"

namespace loom::runtime::kernels {
namespace {

void CheckBiasArgs(const ArgCheck& check, const Tensor& x, const Tensor& bias) {
  check.ExpectDType(x, DType::kF32);
  check.ExpectDType(bias, DType::kF32);
  check.Expect(x.rank() >= 1, "the input needs at least one dimension");
  check.ExpectShape(bias, {x.dim(-1)});
}

}  // namespace

void BiasAdd(Tensor& x, const Tensor& bias) {
  const ArgCheck check("BiasAdd", {{"x", &x}, {"bias", &bias}});
  CheckBiasArgs(check, x, bias);
  if (check.OnCuda()) return check.Twin(CudaTwins().bias_add)(x, bias);
  cpu::BiasAdd(x, bias);
}

void BiasBackward(const Tensor& dout, Tensor& dbias) {
  const ArgCheck check("BiasBackward", {{"dout", &dout}, {"dbias", &dbias}});
  CheckBiasArgs(check, dout, dbias);
  if (check.OnCuda()) return check.Twin(CudaTwins().bias_backward)(dout, dbias);
  cpu::BiasBackward(dout, dbias);
}

}  // namespace loom::runtime::kernels
