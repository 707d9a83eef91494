#include "runtime/kernels/elementwise.h"

#include "runtime/kernels/arg_check.h"
#include "runtime/kernels/cpu/cpu_kernels.h"
#include "runtime/kernels/cuda_twins.h"

namespace loom::runtime::kernels {

void Add(const Tensor& a, const Tensor& b, Tensor& out) {
  ArgCheck check("Add", {{"a", &a}, {"b", &b}, {"out", &out}});
  for (const Tensor* t : std::initializer_list<const Tensor*>{&a, &b, &out}) {
    check.ExpectDType(*t, DType::kF32);
    check.ExpectShape(*t, a.shape());
  }
  if (check.OnCuda()) return check.Twin(CudaTwins().add)(a, b, out);
  cpu::Add(a, b, out);
}

void AddInto(Tensor& dst, const Tensor& src) {
  ArgCheck check("AddInto", {{"dst", &dst}, {"src", &src}});
  check.ExpectDType(dst, DType::kF32);
  check.ExpectDType(src, DType::kF32);
  check.ExpectShape(src, dst.shape());
  check.RequireCpu();
  cpu::Add(dst, src, dst);
}

void Scale(Tensor& x, float factor) {
  ArgCheck check("Scale", {{"x", &x}});
  check.ExpectDType(x, DType::kF32);
  check.RequireCpu();
  cpu::Scale(x, factor);
}

double SumOfSquares(const Tensor& x) {
  ArgCheck check("SumOfSquares", {{"x", &x}});
  check.ExpectDefined(x);
  check.Expect(x.dtype() == DType::kF32 || x.dtype() == DType::kBF16 || x.dtype() == DType::kF16,
               "x must be f32, bf16 or f16");
  if (check.OnCuda()) return check.Twin(CudaTwins().sum_of_squares)(x);
  return cpu::SumOfSquares(x);
}

}  // namespace loom::runtime::kernels
