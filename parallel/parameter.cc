#include "parallel/parameter.h"

#include <algorithm>

#include "runtime/base/check.h"

namespace loom::parallel {

Parameter::Parameter(std::string name, runtime::Shape global_shape, ShardSpec spec,
                     bool weight_decay)
    : name_(std::move(name)),
      global_shape_(std::move(global_shape)),
      spec_(std::move(spec)),
      local_shape_(LocalShape(global_shape_, spec_)),
      weight_decay_(weight_decay) {
  const absl::Status valid = spec_.Check(name_, global_shape_);
  LOOM_CHECK(valid.ok()) << valid.message();
}

void Parameter::Allocate(runtime::Allocator* allocator) {
  value_ = runtime::Tensor::Empty(local_shape_, runtime::DType::kF32, runtime::MemoryTag::kParam,
                                  allocator);
  grad_ = runtime::Tensor::Zeros(local_shape_, runtime::DType::kF32, runtime::MemoryTag::kGrad,
                                 allocator);
}

void Parameter::Materialize(runtime::Allocator* allocator) {
  LOOM_CHECK(initializer_ != nullptr) << name_ << ": Materialize without an initializer";
  Allocate(allocator);
  runtime::Tensor value = value_;  // InitialValues must not see the value it fills as a source
  value_ = runtime::Tensor();
  InitialValues(0, value);
  value_ = std::move(value);
}

void Parameter::InitialValues(int64_t offset, runtime::Tensor out) const {
  const int64_t end = offset + out.numel();
  LOOM_CHECK(offset >= 0 && end <= local_numel())
      << name_ << ": initial values [" << offset << ", " << end << ") outside its " << local_numel()
      << " local elements";
  if (out.numel() == 0) return;
  runtime::Tensor flat = out.Reshape({out.numel()});
  if (value_.defined()) {  // host or device on either side
    flat.CopyFrom(value_.Reshape({local_numel()}).Slice(offset, end));
    return;
  }
  LOOM_CHECK(initializer_ != nullptr) << name_ << ": no value and no initializer";
  if (out.device() != runtime::Device::kCpu) {  // initializers write host memory
    runtime::Tensor host = runtime::Tensor::Empty({out.numel()}, out.dtype(), out.tag(),
                                                  &runtime::Allocator::Default());
    InitialValues(offset, host);
    flat.CopyFrom(host);
    return;
  }
  ForEachRun(global_shape_, spec_, [&](int64_t local, int64_t global, int64_t n) {
    const int64_t lo = std::max(local, offset), hi = std::min(local + n, end);
    if (lo >= hi) return;
    runtime::Tensor piece = flat.Slice(lo - offset, hi - offset);
    initializer_(piece, global + (lo - local));
  });
}

void Parameter::ZeroGrad() {
  if (grad_.defined()) grad_.Fill(0.0f);
  contributions_ = 0;
  row_gradients_.clear();
}

void Parameter::EnableRowGradients(bool on) {
  if (on == row_gradients_enabled_) return;
  LOOM_CHECK(!on || uses_ >= 2) << name_ << ": row gradients need a dense use besides the lookup";
  row_gradients_enabled_ = on;
  uses_ += on ? -1 : 1;
}

void Parameter::AddRowGradients(runtime::Tensor ids, runtime::Tensor rows) {
  LOOM_CHECK(row_gradients_enabled_) << name_ << ": row gradients are not enabled";
  LOOM_CHECK(ids.dtype() == runtime::DType::kI32 && ids.rank() == 1 &&
             rows.dtype() == runtime::DType::kF32 && rows.rank() == 2 &&
             rows.dim(0) == ids.dim(0) && rows.dim(1) == local_shape_.back())
      << name_ << ": row gradients must be i32 ids [N] and f32 rows [N, " << local_shape_.back()
      << "], got " << ids.DebugString() << " and " << rows.DebugString();
  row_gradients_.push_back({std::move(ids), std::move(rows)});
}

namespace {

void CheckBinding(const std::string& name, const runtime::Tensor& t, const runtime::Shape& shape,
                  const char* what, runtime::DType dtype = runtime::DType::kF32) {
  if (!t.defined()) return;
  LOOM_CHECK(t.shape() == shape && t.dtype() == dtype)
      << name << ": " << what << " must be " << dtype << " of the parameter's shape, got "
      << t.DebugString();
}

}  // namespace

void Parameter::BindValue(runtime::Tensor value) {
  CheckBinding(name_, value, local_shape_, "value");
  value_ = std::move(value);
}

void Parameter::BindLowValue(runtime::Tensor low) {
  CheckBinding(name_, low, local_shape_, "low value", runtime::DType::kBF16);
  low_value_ = std::move(low);
}

void Parameter::BindGrad(runtime::Tensor grad) {
  CheckBinding(name_, grad, local_shape_, "grad");
  grad_ = std::move(grad);
}

void Parameter::ContributionDone() {
  LOOM_CHECK_GT(uses_, 0) << name_ << ": ContributionDone on a parameter nobody uses";
  if (++contributions_ < uses_) return;
  contributions_ = 0;
  if (hook_) hook_(*this);
}

}  // namespace loom::parallel
