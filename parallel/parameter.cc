#include "parallel/parameter.h"

#include "absl/strings/str_cat.h"
#include "runtime/base/check.h"

namespace loom::parallel {

std::string ShardSpec::ToString() const {
  switch (kind) {
    case Kind::kReplicated:
      return "replicated";
    case Kind::kSplit:
      return absl::StrCat("split(dim=", dim, ", axis=", axis, ")");
    case Kind::kExpert:
      return absl::StrCat("expert(axis=", axis, ")");
  }
  return "unknown";
}

Parameter::Parameter(std::string name, runtime::Shape global_shape, ShardSpec spec,
                     bool weight_decay)
    : name_(std::move(name)),
      global_shape_(std::move(global_shape)),
      spec_(std::move(spec)),
      weight_decay_(weight_decay) {}

void Parameter::Allocate(runtime::Allocator* allocator) {
  LOOM_CHECK(spec_.kind == ShardSpec::Kind::kReplicated)
      << name_ << ": only replicated parameters can be allocated whole, got " << spec_.ToString();
  value_ = runtime::Tensor::Empty(global_shape_, runtime::DType::kF32, runtime::MemoryTag::kParam,
                                  allocator);
  grad_ = runtime::Tensor::Zeros(global_shape_, runtime::DType::kF32, runtime::MemoryTag::kGrad,
                                 allocator);
}

void Parameter::Materialize(runtime::Allocator* allocator) {
  LOOM_CHECK(initializer_ != nullptr) << name_ << ": Materialize without an initializer";
  Allocate(allocator);
  initializer_(value_, 0);
}

void Parameter::ZeroGrad() {
  if (grad_.defined()) grad_.Fill(0.0f);
  contributions_ = 0;
}

namespace {

void CheckBinding(const std::string& name, const runtime::Tensor& t, const runtime::Shape& shape,
                  const char* what) {
  if (!t.defined()) return;
  LOOM_CHECK(t.shape() == shape && t.dtype() == runtime::DType::kF32)
      << name << ": " << what << " must be f32 of the parameter's shape, got " << t.DebugString();
}

}  // namespace

void Parameter::BindValue(runtime::Tensor value) {
  CheckBinding(name_, value, global_shape_, "value");
  value_ = std::move(value);
}

void Parameter::BindGrad(runtime::Tensor grad) {
  CheckBinding(name_, grad, global_shape_, "grad");
  grad_ = std::move(grad);
}

void Parameter::ContributionDone() {
  LOOM_CHECK_GT(uses_, 0) << name_ << ": ContributionDone on a parameter nobody uses";
  if (++contributions_ < uses_) return;
  contributions_ = 0;
  if (hook_) hook_(*this);
}

}  // namespace loom::parallel
