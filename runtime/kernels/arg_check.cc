#include "runtime/kernels/arg_check.h"

#include "absl/strings/str_cat.h"
#include "runtime/kernels/cuda_twins.h"

namespace loom::runtime::kernels {

namespace {

thread_local int timed_depth = 0;  // entry points being timed on this thread (0 or 1)

}  // namespace

ArgCheck::ArgCheck(absl::string_view op, std::initializer_list<Arg> args) : op_(op), args_(args) {}

ArgCheck::~ArgCheck() {
  if (timing_ == nullptr) return;
  CudaTwins().op_end(timing_);
  --timed_depth;
}

void ArgCheck::BeginTiming() const {
  const CudaTwinTable& twins = CudaTwins();
  if (twins.op_begin == nullptr || timing_ != nullptr || timed_depth > 0) return;
  timing_ = twins.op_begin(std::string_view(op_.data(), op_.size()));
  ++timed_depth;
}

absl::string_view ArgCheck::NameOf(const Tensor& t) const {
  for (const Arg& a : args_) {
    if (a.tensor == &t) return a.name;
  }
  return "?";
}

std::string ArgCheck::Describe() const {
  std::string out = "args:";
  for (const Arg& a : args_) {
    absl::StrAppend(&out, " ", a.name, "=",
                    a.tensor->defined() ? a.tensor->DebugString() : std::string("none"));
  }
  return out;
}

void ArgCheck::Fail(absl::string_view what) const {
  // The op name stands where a CHECK prints its condition: "CHECK failed at ...: Matmul: ...".
  const std::string op(op_);
  base::internal::CheckFailure(__FILE__, __LINE__, op.c_str()).stream()
      << what << "; " << Describe();
  __builtin_unreachable();
}

void ArgCheck::ExpectDefined(const Tensor& t) const {
  if (!t.defined()) Fail(absl::StrCat(NameOf(t), " is required"));
}

void ArgCheck::ExpectDType(const Tensor& t, DType dtype) const {
  ExpectDefined(t);
  if (t.dtype() != dtype) {
    Fail(absl::StrCat(NameOf(t), " must be ", DTypeName(dtype), ", got ", DTypeName(t.dtype())));
  }
}

void ArgCheck::ExpectShape(const Tensor& t, const Shape& shape) const {
  ExpectDefined(t);
  if (t.shape() != shape) {
    Fail(absl::StrCat(NameOf(t), " must have shape ", ShapeToString(shape), ", got ",
                      ShapeToString(t.shape())));
  }
}

void ArgCheck::ExpectRank(const Tensor& t, int rank) const {
  ExpectDefined(t);
  if (t.rank() != rank) {
    Fail(absl::StrCat(NameOf(t), " must have rank ", rank, ", got ", ShapeToString(t.shape())));
  }
}

void ArgCheck::Expect(bool cond, absl::string_view what) const {
  if (!cond) Fail(what);
}

bool ArgCheck::OnCuda() const {
  const Arg* first = nullptr;
  for (const Arg& a : args_) {
    if (!a.tensor->defined()) continue;
    if (first == nullptr) {
      first = &a;
    } else if (a.tensor->device() != first->tensor->device()) {
      Fail(absl::StrCat(first->name, " is on ", DeviceName(first->tensor->device()), " but ",
                        a.name, " is on ", DeviceName(a.tensor->device())));
    }
  }
  return first != nullptr && first->tensor->device() == Device::kCuda;
}

void ArgCheck::FailNoTwin() const {
  Fail(
      "its CUDA twin is not registered (call cuda::RegisterKernels() in a build with the CUDA "
      "backend, docs/gpu.md)");
}

void ArgCheck::RequireCpu() const {
  for (const Arg& a : args_) {
    if (a.tensor->defined() && a.tensor->device() != Device::kCpu) {
      Fail(absl::StrCat(a.name, " is on ", DeviceName(a.tensor->device()),
                        " but the kernel entry points run on the CPU only (their CUDA twins "
                        "are not dispatched to yet: docs/gpu.md)"));
    }
  }
}

}  // namespace loom::runtime::kernels
