#include "models/gpt.h"

#include <cmath>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "parallel/layers/attention.h"
#include "parallel/layers/mlp.h"
#include "parallel/tensor/tensor_parallel.h"
#include "runtime/base/status_macros.h"
#include "runtime/kernels/elementwise.h"
#include "runtime/rng.h"

namespace loom::models {

using parallel::Parameter;
using parallel::Stash;
using runtime::Tensor;
using Pass = parallel::ParameterUseHooks::Pass;

template <typename F>
Tensor GptModel::InUnit(int unit, Pass pass, F&& body) {
  if (hooks_ != nullptr) hooks_->BeforeUse(unit, pass);
  Tensor result = body();
  if (hooks_ != nullptr) hooks_->AfterUse(unit, pass);
  runtime::kernels::RoundToDType(result, activation_dtype_);
  return result;
}

absl::StatusOr<GptConfig> GptConfig::Preset(absl::string_view name) {
  GptConfig c;
  c.name = std::string(name);
  if (name == "tiny") {
    c.vocab_size = 64;
    c.context_length = 64;
    c.num_layers = 2;
    c.num_heads = 4;
    c.dim = 64;
  } else if (name == "cpu-small") {
    c.vocab_size = 4096;
    c.context_length = 256;
    c.num_layers = 6;
    c.num_heads = 6;
    c.dim = 384;
  } else if (name == "gpt2-124m") {
    c.vocab_size = 50257;
    c.context_length = 1024;
    c.num_layers = 12;
    c.num_heads = 12;
    c.dim = 768;
  } else if (name == "tiny-moe" || name == "moe-small") {
    const bool tiny = name == "tiny-moe";
    c.vocab_size = tiny ? 64 : 4096;
    c.context_length = tiny ? 64 : 256;
    c.num_layers = tiny ? 2 : 6;
    c.num_heads = 4;
    c.dim = tiny ? 64 : 256;
    c.mlp = Mlp::kSwiGlu;
    c.norm = Norm::kRMSNorm;
    c.moe = {.num_experts = tiny ? 8 : 16,
             .top_k = tiny ? 2 : 4,
             .expert_hidden = tiny ? 32 : 128,
             .shared_experts = 1};
    c.first_dense_layers = 1;
  } else {
    return absl::InvalidArgumentError(absl::StrCat("unknown GPT preset '", name, "'; choose ",
                                                   absl::StrJoin(PresetNames(), ", ")));
  }
  return c;
}

std::vector<std::string> GptConfig::PresetNames() {
  return {"tiny", "cpu-small", "gpt2-124m", "tiny-moe", "moe-small"};
}

absl::Status GptConfig::Validate() const {
  for (const auto& [field, value] : {std::pair<const char*, int64_t>{"vocab_size", vocab_size},
                                     {"context_length", context_length},
                                     {"num_layers", num_layers},
                                     {"num_heads", num_heads},
                                     {"dim", dim}}) {
    if (value <= 0) {
      return absl::InvalidArgumentError(
          absl::StrCat("GPT config '", name, "': ", field, " must be positive, got ", value));
    }
  }
  if (dim % num_heads != 0) {
    return absl::InvalidArgumentError(absl::StrCat("GPT config '", name, "': num_heads ", num_heads,
                                                   " does not divide dim ", dim));
  }
  return absl::OkStatus();
}

absl::Status GptConfig::ValidateTensorParallel(int tp) const {
  if (tp < 1) return absl::InvalidArgumentError(absl::StrCat("--tp must be >= 1, got ", tp));
  LOOM_RETURN_IF_ERROR(parallel::CheckDivides(tp, num_heads, "heads", name));
  LOOM_RETURN_IF_ERROR(parallel::CheckDivides(tp, MlpHidden(), "MLP hidden units", name));
  if (vocab_size < tp) {
    return absl::InvalidArgumentError(
        absl::StrCat("tp=", tp, " exceeds the vocabulary of ", vocab_size, " tokens of ", name));
  }
  return absl::OkStatus();
}

absl::Status GptConfig::ValidateExpertParallel(int ep, int fold_tp) const {
  auto bad = [&](auto... parts) {
    return absl::InvalidArgumentError(absl::StrCat("GPT config '", name, "': ", parts...));
  };
  if (ep < 1) return absl::InvalidArgumentError(absl::StrCat("--ep must be >= 1, got ", ep));
  // The ranks the experts are split over, as the flags name them.
  const std::string group = fold_tp > 1 ? absl::StrCat("--ep ", ep, " x --tp ", fold_tp,
                                                       " (--moe_fold_tp) = ", ep * fold_tp)
                                        : absl::StrCat("--ep ", ep);
  ep *= fold_tp;
  if (!is_moe()) {
    if (ep > 1) return bad(group, " needs a mixture-of-experts model (e.g. --preset moe-small)");
    return absl::OkStatus();
  }
  const parallel::MoeOptions& m = moe;
  if (m.top_k < 1 || m.top_k > m.num_experts || m.expert_hidden < 1) {
    return bad("top-k ", m.top_k, " must be in [1, ", m.num_experts,
               " experts] and the expert hidden size positive");
  }
  if (m.num_experts % ep != 0) {
    return bad(group, " must divide the ", m.num_experts, " experts");
  }
  if (m.groups < 1 || m.num_experts % m.groups != 0 || m.top_groups < 1 ||
      m.top_groups > m.groups || m.top_k > m.top_groups * (m.num_experts / m.groups)) {
    return bad("node-limited routing: --moe_groups ", m.groups, " must divide the ", m.num_experts,
               " experts and --moe_top_groups ", m.top_groups,
               " (<= groups) of them must hold top-", m.top_k, " experts");
  }
  if (ep > 1 && m.groups > 1 && ep % m.groups != 0) {
    return bad("--moe_groups ", m.groups, " must divide ", group,
               " (a group is the experts of ep / groups consecutive ep ranks: one host's)");
  }
  if (m.capacity_factor < 0) return bad("--moe_capacity_factor must be >= 0 (0: dropless)");
  if (first_dense_layers < 0 || first_dense_layers >= num_layers) {
    return bad("first_dense_layers ", first_dense_layers, " leaves no MoE layer among ",
               num_layers);
  }
  return absl::OkStatus();
}

int64_t GptConfig::MlpHidden() const { return mlp == Mlp::kGelu ? 4 * dim : 8 * dim / 3; }

std::string GptConfig::ToString() const {
  std::string s = absl::StrFormat("%s: vocab %d, context %d, layers %d, heads %d, dim %d, %s, %s",
                                  name, vocab_size, context_length, num_layers, num_heads, dim,
                                  mlp == Mlp::kGelu ? "gelu" : "swiglu",
                                  norm == Norm::kLayerNorm ? "layernorm" : "rmsnorm");
  if (flash_attention) s += ", flash attention";
  if (!is_moe()) return s;
  absl::StrAppendFormat(
      &s, ", moe from layer %d: %d experts top-%d hidden %d + %d shared, %s router",
      first_dense_layers, moe.num_experts, moe.top_k, moe.expert_hidden, moe.shared_experts,
      moe.score == runtime::kernels::RouterScore::kSigmoid ? "sigmoid" : "softmax");
  if (moe.groups > 1)
    absl::StrAppendFormat(&s, ", top %d of %d groups", moe.top_groups, moe.groups);
  if (moe.capacity_factor > 0) absl::StrAppendFormat(&s, ", capacity %g", moe.capacity_factor);
  if (moe.aux_loss_coef > 0) absl::StrAppendFormat(&s, ", aux loss %g", moe.aux_loss_coef);
  return s;
}

namespace {

std::unique_ptr<parallel::Layer> MakeNorm(const GptConfig& c, const std::string& prefix) {
  if (c.norm == GptConfig::Norm::kLayerNorm) {
    return std::make_unique<parallel::LayerNorm>(prefix, c.dim);
  }
  return std::make_unique<parallel::RMSNorm>(prefix, c.dim);
}

std::unique_ptr<parallel::Layer> MakeMlp(const GptConfig& c, int64_t layer,
                                         const std::string& prefix,
                                         const parallel::TensorParallelOptions& tp,
                                         comm::Communicator* ep) {
  if (c.is_moe_layer(layer)) {
    parallel::MoeOptions moe = c.moe;
    if (moe.ep == nullptr) moe.ep = ep;  // else the ep × tp ranks (moe.ep_axis)
    moe.sp = tp.sp() ? tp.group : nullptr;
    moe.tp = tp;  // without sequence parallelism the tp ranks split the layer's tokens
    return std::make_unique<parallel::MoeLayer>(prefix, c.dim, moe);
  }
  if (c.mlp == GptConfig::Mlp::kGelu) {
    return std::make_unique<parallel::GeluMlp>(prefix, c.dim, c.MlpHidden(), tp);
  }
  return std::make_unique<parallel::SwiGluMlp>(prefix, c.dim, c.MlpHidden(), tp);
}

}  // namespace

namespace {

parallel::TensorParallelOptions WithStats(parallel::TensorParallelOptions tp,
                                          parallel::TpStats* stats) {
  tp.split = parallel::TpSplit::kNone;
  tp.stats = stats;
  return tp;
}

}  // namespace

GptModel::GptModel(const GptConfig& config, const parallel::TensorParallelOptions& tp,
                   comm::Communicator* ep)
    : config_(config),
      tp_(WithStats(tp, &tp_stats_)),
      ep_(ep),
      wte_("wte", config.vocab_size, config.dim, tp_),
      wpe_("wpe", config.context_length, config.dim, tp_),
      ln_f_(MakeNorm(config, "ln_f")),
      lm_head_(wte_.weight(), tp_),
      loss_(tp_, config.vocab_size) {
  absl::Status valid = config.Validate();
  if (valid.ok()) valid = config.ValidateTensorParallel(tp_.active() ? tp_.group->size() : 1);
  if (valid.ok()) {
    const bool folded = config.moe.ep_axis == parallel::kEpTpAxis;
    valid = config.ValidateExpertParallel(ep != nullptr ? ep->size() : 1,
                                          folded && tp_.active() ? tp_.group->size() : 1);
  }
  LOOM_CHECK(valid.ok()) << valid.message();
  for (int64_t i = 0; i < config.num_layers; ++i) {
    const std::string p = absl::StrCat("h.", i);
    blocks_.push_back(std::make_unique<parallel::TransformerBlock>(
        MakeNorm(config, p + ".ln_1"),
        std::make_unique<parallel::CausalSelfAttention>(p + ".attn", config.dim, config.num_heads,
                                                        tp_, config.flash_attention),
        MakeNorm(config, p + ".ln_2"), MakeMlp(config, i, p + ".mlp", tp_, ep)));
  }
  // Sequence parallelism: everything not split over tp (norms, position embeddings, row-parallel
  // biases, and a MoE layer's router and experts, which route only this rank's tokens) sees only
  // this rank's tokens.
  // A MoE layer whose expert group is the ep × tp ranks has its specs over that axis already.
  const auto folded = [](const Parameter& p) {
    const parallel::ShardSpec& spec = p.shard_spec();
    return spec.axis == parallel::kEpTpAxis || spec.grad_partial_over_axis(parallel::kEpTpAxis);
  };
  if (tp_.sp()) {
    for (Parameter* p : Parameters()) {
      if (folded(*p)) continue;
      if (!p->shard_spec().is_split() || p->shard_spec().axis != "tp") p->AddGradPartialOver("tp");
    }
  }
  // Expert parallelism: the ep ranks run other tokens, so everything but their own experts
  // gets a partial gradient (with sequence parallelism, the router and the shared experts are
  // partial over both axes).
  if (ep_ != nullptr && ep_->size() > 1) {
    for (Parameter* p : Parameters()) {
      if (folded(*p)) continue;
      if (!p->shard_spec().is_split() || p->shard_spec().axis != "ep") p->AddGradPartialOver("ep");
    }
  }
}

void GptModel::SetInitializers(uint64_t seed) {
  const float residual_std =
      config_.init_std / std::sqrt(2.0f * static_cast<float>(config_.num_layers));
  for (Parameter* p : Parameters()) {
    const std::string& name = p->name();
    const bool is_norm = absl::StrContains(name, "ln_") || absl::StrContains(name, "norm");
    if (absl::EndsWith(name, ".bias") || is_norm) {
      const float value = is_norm && !absl::EndsWith(name, ".bias") ? 1.0f : 0.0f;
      p->SetInitializer([value](Tensor& out, int64_t) { out.Fill(value); });
      continue;
    }
    const bool residual =
        absl::StrContains(name, "c_proj.weight") || absl::StrContains(name, "down_proj.weight");
    const float std = residual ? residual_std : config_.init_std;
    p->SetInitializer([seed, name, std](Tensor& out, int64_t offset) {
      runtime::FillNormal(out, seed, name, offset, 0.0f, std);
    });
  }
}

void GptModel::Initialize(uint64_t seed) {
  SetInitializers(seed);
  for (Parameter* p : Parameters()) p->Materialize();
}

std::vector<parallel::Layer*> GptModel::UnitLayers(int unit) {
  const int blocks = static_cast<int>(blocks_.size());
  LOOM_CHECK(unit >= 0 && unit < num_units()) << "GptModel: no unit " << unit;
  if (unit == 0) return {&wte_, &wpe_};
  if (unit <= blocks) return {blocks_[unit - 1].get()};
  if (unit == blocks + 1) return {ln_f_.get()};
  return {&lm_head_};
}

Tensor GptModel::UnitForward(Stash& stash, int unit, const Tensor& x) {
  return InUnit(unit, Pass::kForward, [&] {
    Tensor y = x;
    for (parallel::Layer* layer : UnitLayers(unit)) y = layer->Forward(stash, y);
    return y;
  });
}

Tensor GptModel::UnitBackwardInput(Stash& stash, int unit, const Tensor& dy) {
  return InUnit(unit, Pass::kBackward, [&] {
    Tensor d = dy;
    const std::vector<parallel::Layer*> layers = UnitLayers(unit);
    for (auto l = layers.rbegin(); l != layers.rend(); ++l) d = (*l)->BackwardInput(stash, d);
    return d;
  });
}

void GptModel::UnitBackwardWeight(Stash& stash, int unit) {
  InUnit(unit, Pass::kBackward, [&] {
    const std::vector<parallel::Layer*> layers = UnitLayers(unit);
    for (auto l = layers.rbegin(); l != layers.rend(); ++l) (*l)->BackwardWeight(stash);
    return Tensor();
  });
}

// B and W of each layer together, so data parallelism can start reducing a unit's gradients
// the moment its backward is done.
Tensor GptModel::UnitBackward(Stash& stash, int unit, const Tensor& dy) {
  return InUnit(unit, Pass::kBackward, [&] {
    Tensor d = dy;
    const std::vector<parallel::Layer*> layers = UnitLayers(unit);
    for (auto l = layers.rbegin(); l != layers.rend(); ++l) d = parallel::Backward(**l, stash, d);
    return d;
  });
}

void GptModel::BeginMicroBatch(Stash& stash, const Tensor& inputs) const {
  LOOM_CHECK(inputs.rank() == 2 && inputs.dim(1) <= config_.context_length)
      << "GptModel: inputs must be [B, T] with T <= " << config_.context_length << ", got "
      << inputs.DebugString();
  const int64_t tokens = inputs.dim(0) * inputs.dim(1), tp = tp_.active() ? tp_.group->size() : 1;
  LOOM_CHECK(!tp_.sp() || tokens % tp == 0)
      << "GptModel: sequence parallelism needs the " << tokens << " tokens of a micro-batch to "
      << "split over tp " << tp;
  stash.SetSequenceLength(inputs.dim(1));
}

Tensor GptModel::Logits(Stash& stash, const Tensor& inputs) {
  BeginMicroBatch(stash, inputs);
  Tensor x = inputs;
  for (int unit = 0; unit < num_units(); ++unit) x = UnitForward(stash, unit, x);
  return x;
}

float GptModel::Loss(Stash& stash, const Tensor& logits, const Tensor& targets) {
  return loss_.Forward(stash, logits, targets);
}

float GptModel::ForwardLoss(Stash& stash, const Tensor& inputs, const Tensor& targets) {
  return Loss(stash, Logits(stash, inputs), targets);
}

Tensor GptModel::LossBackward(Stash& stash, float scale) {
  stash.SetLossGradScale(scale);  // for layers' own loss terms (MoE auxiliary loss)
  Tensor dx = loss_.Backward(stash, scale);
  runtime::kernels::RoundToDType(dx, activation_dtype_);
  return dx;
}

void GptModel::Backward(Stash& stash, float scale) {
  Tensor dx = LossBackward(stash, scale);
  for (int unit = num_units(); unit-- > 0;) dx = UnitBackward(stash, unit, dx);
}

std::vector<std::vector<Parameter*>> GptModel::ParameterUnits() {
  std::vector<std::vector<Parameter*>> units = {{&wte_.weight()}};
  for (Parameter* p : wpe_.Parameters()) units[0].push_back(p);
  for (auto& block : blocks_) units.push_back(block->Parameters());
  units.push_back(ln_f_->Parameters());
  units.push_back({&wte_.weight()});
  return units;
}

std::vector<Parameter*> GptModel::Parameters() {
  std::vector<Parameter*> params = {&wte_.weight()};
  for (Parameter* p : wpe_.Parameters()) params.push_back(p);
  for (auto& block : blocks_) {
    for (Parameter* p : block->Parameters()) params.push_back(p);
  }
  for (Parameter* p : ln_f_->Parameters()) params.push_back(p);
  return params;
}

Parameter* GptModel::FindParameter(absl::string_view name) {
  for (Parameter* p : Parameters()) {
    if (p->name() == name) return p;
  }
  return nullptr;
}

int64_t GptModel::NumParameters() {
  int64_t n = 0;
  for (Parameter* p : Parameters()) n += runtime::NumElements(p->global_shape());
  return n;
}

void GptModel::ZeroGrad() {
  for (Parameter* p : Parameters()) p->ZeroGrad();
}

void GptModel::SetRecompute(bool recompute) {
  for (auto& block : blocks_) block->set_recompute(recompute);
}

comm::Communicator* GptModel::AxisGroup(const std::string& axis) const {
  if (axis == "tp") return tp();
  if (axis == "ep") return ep_;
  if (axis == parallel::kEpTpAxis) return config_.moe.ep;
  return nullptr;
}

std::vector<parallel::MoeLayer*> GptModel::MoeLayers() {
  std::vector<parallel::MoeLayer*> layers;
  for (int64_t i = 0; i < config_.num_layers; ++i) {
    if (!config_.is_moe_layer(i)) continue;
    layers.push_back(static_cast<parallel::MoeLayer*>(blocks_[i]->mlp()));
  }
  return layers;
}

double GptModel::moe_exchange_wait_ms() {
  double ms = 0.0;
  for (parallel::MoeLayer* layer : MoeLayers()) ms += layer->exchange_wait_ms();
  return ms;
}

void GptModel::ResetMoeExchangeWait() {
  for (parallel::MoeLayer* layer : MoeLayers()) layer->ResetExchangeWait();
}

std::vector<runtime::io::NamedTensor> GptModel::Buffers() {
  std::vector<runtime::io::NamedTensor> buffers;
  for (parallel::MoeLayer* layer : MoeLayers()) {
    if (!layer->held()) continue;
    buffers.push_back({layer->bias_name(), layer->bias()});
  }
  return buffers;
}

absl::StatusOr<std::vector<std::vector<int64_t>>> GptModel::FinishMoeStep(
    const std::vector<comm::Communicator*>& groups, bool update_bias) {
  std::vector<std::vector<int64_t>> loads;
  for (parallel::MoeLayer* layer : MoeLayers()) {
    LOOM_ASSIGN_OR_RETURN(std::vector<int64_t> load, layer->TakeLoad(groups));
    if (update_bias) layer->UpdateBias(load);
    loads.push_back(std::move(load));
  }
  return loads;
}

double GptModel::TrainingFlopsPerToken(int64_t seq_len) {
  // Active parameters: a token runs top-k of each MoE layer's routed experts.
  int64_t idle = 0;
  for (parallel::MoeLayer* layer : MoeLayers()) {
    const parallel::MoeOptions& m = layer->options();
    idle += (m.num_experts - m.top_k) * 3 * m.expert_hidden * config_.dim;
  }
  const double n =
      static_cast<double>(NumParameters() - idle - config_.context_length * config_.dim);
  return 6.0 * n + 12.0 * static_cast<double>(config_.num_layers * seq_len * config_.dim);
}

}  // namespace loom::models
