#include "runtime/kernels/norm.h"

#include "runtime/kernels/arg_check.h"
#include "runtime/kernels/cpu/cpu_kernels.h"

namespace loom::runtime::kernels {
namespace {

// Checks x[..., C] (f32), that every tensor in `same_as_x` has x's shape, every one in
// `per_channel` is [C] and every one in `per_row` is [N]. Ends at the device seam.
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
  check.RequireCpu();
}

}  // namespace

void LayerNormForward(const Tensor& x, const Tensor& w, const Tensor& b, float eps, Tensor& out,
                      Tensor& mean, Tensor& rstd) {
  CheckNormArgs(
      ArgCheck("LayerNormForward",
               {{"x", &x}, {"w", &w}, {"b", &b}, {"out", &out}, {"mean", &mean}, {"rstd", &rstd}}),
      x, {&out}, {&w, &b}, {&mean, &rstd});
  cpu::LayerNormForward(x, w, b, eps, out, mean, rstd);
}

void LayerNormBackward(const Tensor& dout, const Tensor& x, const Tensor& w, const Tensor& mean,
                       const Tensor& rstd, Tensor& dx, Tensor& dw, Tensor& db) {
  CheckNormArgs(ArgCheck("LayerNormBackward", {{"dout", &dout},
                                               {"x", &x},
                                               {"w", &w},
                                               {"mean", &mean},
                                               {"rstd", &rstd},
                                               {"dx", &dx},
                                               {"dw", &dw},
                                               {"db", &db}}),
                x, {&dout, &dx}, {&w, &dw, &db}, {&mean, &rstd});
  cpu::LayerNormBackward(dout, x, w, mean, rstd, dx, dw, db);
}

void RMSNormForward(const Tensor& x, const Tensor& w, float eps, Tensor& out, Tensor& rstd) {
  CheckNormArgs(ArgCheck("RMSNormForward", {{"x", &x}, {"w", &w}, {"out", &out}, {"rstd", &rstd}}),
                x, {&out}, {&w}, {&rstd});
  cpu::RMSNormForward(x, w, eps, out, rstd);
}

void RMSNormBackward(const Tensor& dout, const Tensor& x, const Tensor& w, const Tensor& rstd,
                     Tensor& dx, Tensor& dw) {
  CheckNormArgs(
      ArgCheck("RMSNormBackward",
               {{"dout", &dout}, {"x", &x}, {"w", &w}, {"rstd", &rstd}, {"dx", &dx}, {"dw", &dw}}),
      x, {&dout, &dx}, {&w, &dw}, {&rstd});
  cpu::RMSNormBackward(dout, x, w, rstd, dx, dw);
}

}  // namespace loom::runtime::kernels
