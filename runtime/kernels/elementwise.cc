#include "runtime/kernels/elementwise.h"

#include "runtime/base/check.h"
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
  if (check.OnCuda()) return check.Twin(CudaTwins().add_into)(dst, src);
  cpu::Add(dst, src, dst);
}

void Scale(Tensor& x, float factor) {
  ArgCheck check("Scale", {{"x", &x}});
  check.ExpectDType(x, DType::kF32);
  if (check.OnCuda()) return check.Twin(CudaTwins().scale)(x, factor);
  cpu::Scale(x, factor);
}

void Convert(const Tensor& src, Tensor& dst) {
  ArgCheck check("Convert", {{"src", &src}, {"dst", &dst}});
  check.ExpectDefined(src);
  check.ExpectShape(dst, src.shape());
  check.Expect(IsFloatingPoint(src.dtype()) && IsFloatingPoint(dst.dtype()),
               "src and dst must be floating point");
  if (check.OnCuda()) {
    check.Expect(src.dtype() == DType::kF32 || dst.dtype() == DType::kF32,
                 "on CUDA one side must be f32");
    check.Expect(src.dtype() != DType::kF8E4M3 && dst.dtype() != DType::kF8E4M3,
                 "fp8 conversion on CUDA is not built");
    return check.Twin(CudaTwins().convert)(src, dst);
  }
  ConvertBuffer(src.raw_data(), src.dtype(), dst.raw_data(), dst.dtype(), src.numel());
}

void RoundToDType(Tensor& x, DType dtype) {
  if (dtype == DType::kF32 || !x.defined()) return;
  ArgCheck check("RoundToDType", {{"x", &x}});
  check.ExpectDType(x, DType::kF32);
  check.Expect(dtype == DType::kBF16 || dtype == DType::kF16, "dtype must be f32, bf16 or f16");
  if (check.OnCuda()) return check.Twin(CudaTwins().round_to_dtype)(x, dtype);
  runtime::RoundToDType(x.data<float>(), x.numel(), dtype);
}

void CheckIndices(const Tensor& ids, int64_t limit, const char* what) {
  ArgCheck check("CheckIndices", {{"ids", &ids}});
  check.ExpectDType(ids, DType::kI32);
  if (check.OnCuda()) return check.Twin(CudaTwins().check_indices)(ids, limit, what);
  const int32_t* id = ids.data<int32_t>();
  for (int64_t i = 0; i < ids.numel(); ++i) {
    LOOM_CHECK(id[i] >= 0 && id[i] < limit)
        << what << "[" << i << "] = " << id[i] << " is outside [0, " << limit << ")";
  }
}

void CheckDeviceErrors() {
  if (CudaTwins().check_errors != nullptr) CudaTwins().check_errors();
}

namespace {

ArgCheck CheckSumOfSquares(const Tensor& x) {
  ArgCheck check("SumOfSquares", {{"x", &x}});
  check.ExpectDefined(x);
  check.Expect(x.dtype() == DType::kF32 || x.dtype() == DType::kBF16 || x.dtype() == DType::kF16,
               "x must be f32, bf16 or f16");
  return check;
}

}  // namespace

double SumOfSquares(const Tensor& x) {
  const ArgCheck check = CheckSumOfSquares(x);
  if (check.OnCuda()) return check.Twin(CudaTwins().sum_of_squares)(x);
  return cpu::SumOfSquares(x);
}

std::vector<double> SumsOfSquares(std::span<const Tensor> xs) {
  std::vector<double> sums(xs.size());
  if (xs.empty()) return sums;
  const bool on_device = CheckSumOfSquares(xs[0]).OnCuda();
  for (const Tensor& x : xs) {
    const ArgCheck check = CheckSumOfSquares(x);
    check.Expect(check.OnCuda() == on_device,
                 "SumsOfSquares takes tensors all on the host or all on one device");
  }
  if (on_device) {
    CheckSumOfSquares(xs[0]).Twin(CudaTwins().sums_of_squares)(xs, sums.data());
    return sums;
  }
  for (size_t i = 0; i < xs.size(); ++i) sums[i] = cpu::SumOfSquares(xs[i]);
  return sums;
}

}  // namespace loom::runtime::kernels
