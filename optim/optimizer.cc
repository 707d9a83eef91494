#include "optim/optimizer.h"

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"
#include "runtime/base/check.h"
#include "runtime/base/status_macros.h"

namespace loom::optim {

using runtime::DType;
using runtime::MemoryTag;
using runtime::Tensor;

namespace {

Tensor StateLike(const Tensor& param) {
  return Tensor::Zeros({param.numel()}, DType::kF32, MemoryTag::kOptimizer, param.Beside());
}

// Copies of the state tensors whose names end in `suffix` (where they are), keyed by the parameter
// name before it.
std::map<std::string, Tensor> StateWithSuffix(const std::vector<NamedTensor>& state,
                                              absl::string_view suffix) {
  std::map<std::string, Tensor> out;
  for (const NamedTensor& s : state) {
    absl::string_view name = s.name;
    if (absl::ConsumeSuffix(&name, suffix))
      out[std::string(name)] = s.tensor.Clone(s.tensor.Beside());
  }
  return out;
}

absl::Status CheckStateTensor(const std::string& name, const Tensor& t) {
  if (t.dtype() != DType::kF32 || t.rank() != 1) {
    return absl::InvalidArgumentError(absl::StrCat(
        "optimizer state '", name, "' is ", t.DebugString(), ", expected a flat f32 tensor"));
  }
  return absl::OkStatus();
}

// A slot without state after the first step means a checkpoint lacked it: never start it fresh.
void CheckStateExists(bool found, int64_t step, const std::string& name) {
  LOOM_CHECK(found || step <= 1) << "optimizer has no state for parameter '" << name << "' at step "
                                 << step << " (restored from an incomplete checkpoint?)";
}

}  // namespace

AdamW::Moments& AdamW::MomentsFor(const ParamSlot& slot) {
  auto it = moments_.find(slot.name);
  CheckStateExists(it != moments_.end(), step_, slot.name);
  if (it == moments_.end()) {
    it = moments_.emplace(slot.name, Moments{StateLike(slot.param), StateLike(slot.param)}).first;
  }
  LOOM_CHECK_EQ(it->second.m.numel(), slot.param.numel())
      << "AdamW: parameter " << slot.name << " changed size";
  return it->second;
}

void AdamW::Step(const std::vector<ParamSlot>& slots, float lr) {
  ++step_;
  std::vector<runtime::kernels::AdamWTensors> tensors;
  for (const ParamSlot& slot : slots) {
    Moments& mo = MomentsFor(slot);
    tensors.push_back({slot.param, slot.grad, mo.m, mo.v, slot.decay});
  }
  // One call for every slot: a few launches on a device instead of one per parameter.
  runtime::kernels::AdamWUpdateMany(tensors,
                                    {.lr = lr,
                                     .beta1 = options_.beta1,
                                     .beta2 = options_.beta2,
                                     .eps = options_.eps,
                                     .weight_decay = options_.weight_decay},
                                    step_);
}

std::vector<NamedTensor> AdamW::State() const {
  std::vector<NamedTensor> out;
  for (const auto& [name, mo] : moments_) {
    out.push_back({name + ".exp_avg", mo.m});
    out.push_back({name + ".exp_avg_sq", mo.v});
  }
  return out;
}

absl::Status AdamW::LoadState(const std::vector<NamedTensor>& state, int64_t step) {
  std::map<std::string, Tensor> m = StateWithSuffix(state, ".exp_avg");
  std::map<std::string, Tensor> v = StateWithSuffix(state, ".exp_avg_sq");
  std::map<std::string, Moments> moments;
  for (auto& [name, mt] : m) {
    auto vt = v.find(name);
    if (vt == v.end()) {
      return absl::InvalidArgumentError(
          absl::StrCat("optimizer state '", name, ".exp_avg_sq' is missing"));
    }
    LOOM_RETURN_IF_ERROR(CheckStateTensor(name + ".exp_avg", mt));
    LOOM_RETURN_IF_ERROR(CheckStateTensor(name + ".exp_avg_sq", vt->second));
    if (mt.numel() != vt->second.numel()) {
      return absl::InvalidArgumentError(
          absl::StrCat("optimizer state for '", name, "': exp_avg and exp_avg_sq differ in size"));
    }
    moments[name] = Moments{mt, vt->second};
  }
  if (moments.size() != v.size()) {
    return absl::InvalidArgumentError("optimizer state has exp_avg_sq entries without exp_avg");
  }
  moments_ = std::move(moments);
  step_ = step;
  return absl::OkStatus();
}

void Sgd::Step(const std::vector<ParamSlot>& slots, float lr) {
  ++step_;
  for (const ParamSlot& slot : slots) {
    auto it = momentum_.find(slot.name);
    const bool first = it == momentum_.end();
    CheckStateExists(!first, step_, slot.name);
    if (first) it = momentum_.emplace(slot.name, StateLike(slot.param)).first;
    Tensor param = slot.param;
    runtime::kernels::SgdUpdate(param, slot.grad, it->second,
                                {.lr = lr,
                                 .momentum = options_.momentum,
                                 .weight_decay = slot.decay ? options_.weight_decay : 0.0f,
                                 .first = first});
  }
}

std::vector<NamedTensor> Sgd::State() const {
  std::vector<NamedTensor> out;
  for (const auto& [name, buf] : momentum_) out.push_back({name + ".momentum_buffer", buf});
  return out;
}

absl::Status Sgd::LoadState(const std::vector<NamedTensor>& state, int64_t step) {
  std::map<std::string, Tensor> buffers = StateWithSuffix(state, ".momentum_buffer");
  for (const auto& [name, buf] : buffers) {
    LOOM_RETURN_IF_ERROR(CheckStateTensor(name + ".momentum_buffer", buf));
  }
  momentum_ = std::move(buffers);
  step_ = step;
  return absl::OkStatus();
}

}  // namespace loom::optim
