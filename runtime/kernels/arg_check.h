// Argument validation shared by every kernel entry point, and the device seam.
//
//   ArgCheck check("LayerNormForward", {{"x", &x}, {"w", &w}, {"out", &out}});
//   check.ExpectDType(x, DType::kF32);
//   check.ExpectShape(w, {C});
//   check.RequireCpu();   // the seam: CUDA tensors need the CUDA backend (not built yet)
//
// A failed expectation aborts (it is a programmer error) with a message naming the op, what was
// expected, and every argument's dtype and shape, e.g.
//   "LayerNormForward: w must have shape [33], got [34]; args: x=f32[7, 33] w=f32[34] ..."
#pragma once

#include <initializer_list>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/string_view.h"
#include "runtime/tensor.h"

namespace loom::runtime::kernels {

class ArgCheck {
 public:
  struct Arg {
    absl::string_view name;
    const Tensor* tensor;  // may point to an undefined tensor (optional argument)
  };

  ArgCheck(absl::string_view op, std::initializer_list<Arg> args);

  void ExpectDType(const Tensor& t, DType dtype) const;
  void ExpectShape(const Tensor& t, const Shape& shape) const;
  void ExpectRank(const Tensor& t, int rank) const;
  void ExpectDefined(const Tensor& t) const;
  // Aborts with `what` (e.g. "qkv's last dimension must be 3 * C") unless `cond`.
  void Expect(bool cond, absl::string_view what) const;

  // The device seam: every defined argument must be on the host. When the CUDA backend exists,
  // entry points will branch on Device() instead and call kernels/cuda.
  void RequireCpu() const;

  [[noreturn]] void Fail(absl::string_view what) const;

 private:
  absl::string_view NameOf(const Tensor& t) const;
  std::string Describe() const;

  absl::string_view op_;
  std::vector<Arg> args_;
};

}  // namespace loom::runtime::kernels
