// Argument validation shared by every kernel entry point, and the device seam.
//
//   ArgCheck check("LayerNormForward", {{"x", &x}, {"w", &w}, {"out", &out}});
//   check.ExpectDType(x, DType::kF32);
//   check.ExpectShape(w, {C});
//   check.RequireCpu();   // the seam: an op without a CUDA twin refuses device tensors
//   if (check.OnCuda()) return check.Twin(CudaTwins().gelu_forward)(x, out);  // one with a twin
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
  ~ArgCheck();
  ArgCheck(ArgCheck&& other) noexcept
      : op_(other.op_), args_(std::move(other.args_)), timing_(other.timing_) {
    other.timing_ = nullptr;
  }
  ArgCheck(const ArgCheck&) = delete;
  ArgCheck& operator=(const ArgCheck&) = delete;

  void ExpectDType(const Tensor& t, DType dtype) const;
  void ExpectShape(const Tensor& t, const Shape& shape) const;
  void ExpectRank(const Tensor& t, int rank) const;
  void ExpectDefined(const Tensor& t) const;
  // Aborts with `what` (e.g. "qkv's last dimension must be 3 * C") unless `cond`.
  void Expect(bool cond, absl::string_view what) const;

  // The device seam. RequireCpu: every defined argument must be on the host (ops without a CUDA
  // twin). OnCuda: whether the arguments are on a CUDA device (all of them: mixed devices fail,
  // naming both). Twin: the registered CUDA twin (runtime/kernels/cuda_twins.h), or a failure
  // naming the op when there is none.
  void RequireCpu() const;
  bool OnCuda() const;
  // Under LOOM_CUDA_PROFILE=1 the twin's device time is taken from here to the end of the check's
  // scope (CudaTwinTable::op_begin).
  template <typename Fn>
  Fn Twin(Fn fn) const {
    if (fn == nullptr) FailNoTwin();
    BeginTiming();
    return fn;
  }

  [[noreturn]] void Fail(absl::string_view what) const;
  [[noreturn]] void FailNoTwin() const;

 private:
  absl::string_view NameOf(const Tensor& t) const;
  std::string Describe() const;

  void BeginTiming() const;

  absl::string_view op_;
  std::vector<Arg> args_;
  mutable void* timing_ = nullptr;  // op_begin's token, ended when the check goes
};

}  // namespace loom::runtime::kernels
