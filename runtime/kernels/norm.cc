#include "runtime/kernels/norm.h"

#include "runtime/kernels/arg_check.h"
#include "runtime/kernels/cpu/cpu_kernels.h"
#include "runtime/kernels/cuda_twins.h"

namespace loom::runtime::kernels {
namespace {

// Checks x[..., C] (f32), that every tensor in `same_as_x` has x's shape, every one in
// `per_channel` is [C] and every one in `per_row` is [N]. The caller takes the device seam.
void CheckNormArgs(const ArgCheck& check, const Tensor& x,
                   std::initializer_list<const Tensor*> same_as_x,
                   std::initializer_list<const Tensor*> per_channel,
                   std::initializer_list<const Tensor*> per_row) {
  check.ExpectDType(x, DType::kF32);
  check.Expect(x.rank() >= 1, "x needs at least one dimension");
  const int64_t c = x.dim(-1);
  const int64_t n = c == 0 ? 0 : x.numel() / c;
  for (const Tensor* t : same_as_x) {
    check.ExpectDType(*t, DType::kF32);
    check.ExpectShape(*t, x.shape());
  }
  for (const Tensor* t : per_channel) {
    check.ExpectDType(*t, DType::kF32);
    check.ExpectShape(*t, {c});
  }
  for (const Tensor* t : per_row) {
    check.ExpectDType(*t, DType::kF32);
    check.ExpectShape(*t, {n});
  }
}

}  // namespace

void LayerNormForward(const Tensor& x, const Tensor& w, const Tensor& b, float eps, Tensor& out,
                      Tensor& mean, Tensor& rstd) {
  const ArgCheck check(
      "LayerNormForward",
      {{"x", &x}, {"w", &w}, {"b", &b}, {"out", &out}, {"mean", &mean}, {"rstd", &rstd}});
  CheckNormArgs(check, x, {&out}, {&w, &b}, {&mean, &rstd});
  if (check.OnCuda()) {
    return check.Twin(CudaTwins().layer_norm_forward)(x, w, b, eps, out, mean, rstd);
  }
  cpu::LayerNormForward(x, w, b, eps, out, mean, rstd);
}

void LayerNormBackward(const Tensor& dout, const Tensor& x, const Tensor& w, const Tensor& mean,
                       const Tensor& rstd, Tensor& dx, Tensor& dw, Tensor& db) {
  const ArgCheck check("LayerNormBackward", {{"dout", &dout},
                                             {"x", &x},
                                             {"w", &w},
                                             {"mean", &mean},
                                             {"rstd", &rstd},
                                             {"dx", &dx},
                                             {"dw", &dw},
                                             {"db", &db}});
  CheckNormArgs(check, x, {&dout, &dx}, {&w, &dw, &db}, {&mean, &rstd});
  if (check.OnCuda()) {
    return check.Twin(CudaTwins().layer_norm_backward)(dout, x, w, mean, rstd, dx, dw, db);
  }
  cpu::LayerNormBackward(dout, x, w, mean, rstd, dx, dw, db);
}

void RMSNormForward(const Tensor& x, const Tensor& w, float eps, Tensor& out, Tensor& rstd) {
  const ArgCheck check("RMSNormForward", {{"x", &x}, {"w", &w}, {"out", &out}, {"rstd", &rstd}});
  CheckNormArgs(check, x, {&out}, {&w}, {&rstd});
  if (check.OnCuda()) return check.Twin(CudaTwins().rms_norm_forward)(x, w, eps, out, rstd);
  cpu::RMSNormForward(x, w, eps, out, rstd);
}

void RMSNormBackward(const Tensor& dout, const Tensor& x, const Tensor& w, const Tensor& rstd,
                     Tensor& dx, Tensor& dw) {
  const ArgCheck check(
      "RMSNormBackward",
      {{"dout", &dout}, {"x", &x}, {"w", &w}, {"rstd", &rstd}, {"dx", &dx}, {"dw", &dw}});
  CheckNormArgs(check, x, {&dout, &dx}, {&w, &dw}, {&rstd});
  if (check.OnCuda()) {
    return check.Twin(CudaTwins().rms_norm_backward)(dout, x, w, rstd, dx, dw);
  }
  cpu::RMSNormBackward(dout, x, w, rstd, dx, dw);
}

}  // namespace loom::runtime::kernels
