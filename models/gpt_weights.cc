#include "models/gpt_weights.h"

#include <algorithm>
#include <map>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"
#include "runtime/base/status_macros.h"

namespace loom::models {

using runtime::DType;
using runtime::Tensor;
using runtime::io::NamedTensor;

absl::StatusOr<std::vector<NamedTensor>> GptParameterTensors(GptModel& model) {
  std::vector<NamedTensor> out;
  for (parallel::Parameter* p : model.Parameters()) {
    if (!p->value().defined()) continue;  // another pipeline stage's
    if (!p->shard_spec().is_split()) {
      out.push_back({p->name(), p->value()});
      continue;
    }
    LOOM_ASSIGN_OR_RETURN(Tensor whole,
                          parallel::GatherShards(p->value(), p->global_shape(), p->shard_spec(),
                                                 *model.AxisGroup(p->shard_spec().axis)));
    out.push_back({p->name(), std::move(whole)});
  }
  for (runtime::io::NamedTensor& b : model.Buffers()) out.push_back(std::move(b));
  return out;
}

absl::Status WriteGptWeights(const GptConfig& config, const std::vector<NamedTensor>& tensors,
                             const std::string& path) {
  return runtime::io::WriteSafetensors(path, tensors,
                                       {{"format", "pt"}, {"loom_config", config.ToString()}});
}

namespace {

bool IsMaskBuffer(absl::string_view name) {
  return absl::StartsWith(name, "h.") &&
         (absl::EndsWith(name, ".attn.bias") || absl::EndsWith(name, ".attn.masked_bias"));
}

bool SameValues(const Tensor& a, const Tensor& b) {
  return a.shape() == b.shape() && a.ToF32Vector() == b.ToF32Vector();
}

}  // namespace

absl::Status LoadGptWeights(GptModel& model, const runtime::io::SafetensorsFile& file,
                            const std::string& source) {
  std::map<std::string, const Tensor*> by_name;
  const Tensor* lm_head = nullptr;
  for (const NamedTensor& nt : file.tensors) {
    absl::string_view name = nt.name;
    absl::ConsumePrefix(&name, "transformer.");
    if (name == "lm_head.weight") {
      lm_head = &nt.tensor;
      continue;
    }
    if (IsMaskBuffer(name)) continue;
    if (!runtime::IsFloatingPoint(nt.tensor.dtype())) {
      return absl::InvalidArgumentError(absl::StrCat(source, ": tensor '", nt.name, "' is ",
                                                     nt.tensor.DebugString(),
                                                     "; GPT weights must be floating point"));
    }
    by_name[std::string(name)] = &nt.tensor;
  }
  // Buffers (MoE balancing biases) are taken when the file has them (a loom export or
  // checkpoint), else keep their start value; they are not parameters.
  std::vector<runtime::io::NamedTensor> buffers = model.Buffers();
  for (runtime::io::NamedTensor& b : buffers) {
    auto it = by_name.find(b.name);
    if (it == by_name.end()) continue;
    if (it->second->shape() != b.tensor.shape()) {
      return absl::InvalidArgumentError(absl::StrCat(
          source, ": buffer '", b.name, "' has shape ", runtime::ShapeToString(it->second->shape()),
          ", the model expects ", runtime::ShapeToString(b.tensor.shape())));
    }
  }
  // Validate everything before touching the model.
  std::vector<parallel::Parameter*> params = model.Parameters();
  for (parallel::Parameter* p : params) {
    auto it = by_name.find(p->name());
    if (it == by_name.end()) {
      return absl::InvalidArgumentError(absl::StrCat(
          source, ": parameter '", p->name(), "' is missing (", model.config().ToString(), ")"));
    }
    if (it->second->shape() != p->global_shape()) {
      return absl::InvalidArgumentError(absl::StrCat(
          source, ": tensor '", p->name(), "' has shape ",
          runtime::ShapeToString(it->second->shape()), ", the model expects ",
          runtime::ShapeToString(p->global_shape()), " (", model.config().ToString(), ")"));
    }
  }
  auto is_buffer = [&](const std::string& name) {
    return std::any_of(buffers.begin(), buffers.end(),
                       [&](const auto& b) { return b.name == name; });
  };
  if (by_name.size() != params.size()) {
    for (const auto& [name, t] : by_name) {
      if (model.FindParameter(name) == nullptr && !is_buffer(name)) {
        return absl::InvalidArgumentError(
            absl::StrCat(source, ": tensor '", name, "' is not a parameter of this model"));
      }
    }
  }
  if (lm_head != nullptr && !SameValues(*lm_head, *by_name["wte.weight"])) {
    return absl::InvalidArgumentError(
        absl::StrCat(source, ": 'lm_head.weight' differs from 'wte.weight'; loom's GPT ties them"));
  }
  for (parallel::Parameter* p : params) {
    const Tensor& src = *by_name[p->name()];
    if (!p->shard_spec().is_split()) {
      runtime::ConvertBuffer(src.raw_data(), src.dtype(), p->value().raw_data(), DType::kF32,
                             src.numel());
      continue;
    }
    // Widened whole, then this rank's slice of it.
    Tensor whole = Tensor::Empty(src.shape(), DType::kF32, runtime::MemoryTag::kWorkspace);
    runtime::ConvertBuffer(src.raw_data(), src.dtype(), whole.raw_data(), DType::kF32, src.numel());
    parallel::ExtractShard(whole, p->shard_spec(), p->value());
  }
  for (runtime::io::NamedTensor& b : buffers) {
    auto it = by_name.find(b.name);
    if (it == by_name.end()) continue;
    runtime::ConvertBuffer(it->second->raw_data(), it->second->dtype(), b.tensor.raw_data(),
                           DType::kF32, b.tensor.numel());
  }
  return absl::OkStatus();
}

absl::Status ImportGptWeights(GptModel& model, const std::string& path) {
  LOOM_ASSIGN_OR_RETURN(runtime::io::SafetensorsFile file, runtime::io::ReadSafetensors(path));
  return LoadGptWeights(model, file, path);
}

}  // namespace loom::models
