// GPT: the GPT-2 architecture (learned positions, pre-norm blocks, GELU MLP, LM head tied to the
// token embedding) built only from loom's public layer API, with Hugging Face GPT-2 parameter
// names and layouts.
//
//   LOOM_ASSIGN_OR_RETURN(GptConfig config, GptConfig::Preset("tiny"));
//   GptModel model(config);
//   model.Initialize(/*seed=*/1337);
//   Stash stash;
//   float loss = model.ForwardLoss(stash, inputs, targets);   // i32 [B, T] each
//   model.Backward(stash, /*scale=*/1.0f);                    // grads += ∂(scale·loss)/∂θ
//
// Variants (for tests and later models): RMSNorm instead of LayerNorm, SwiGLU instead of GELU.
//
// Tensor parallelism: GptModel model(config, tp) with a tp group of N ranks splits the heads, the
// MLP's hidden layer and the vocabulary over it (parallel/tensor/tensor_parallel.h; check the
// shape first with config.ValidateTensorParallel(N)). Every rank of the group runs every
// forward and backward together; parameters hold this rank's shards (Parameter::local_shape), the
// loss and the gradients of replicated parameters are the same on every tp rank.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "parallel/layers/block.h"
#include "parallel/layers/embedding.h"
#include "parallel/layers/loss.h"
#include "parallel/layers/moe.h"
#include "parallel/layers/norm.h"
#include "parallel/tensor/tensor_parallel.h"
#include "runtime/io/safetensors.h"

namespace loom::models {

struct GptConfig {
  enum class Mlp { kGelu, kSwiGlu };
  enum class Norm { kLayerNorm, kRMSNorm };

  std::string name = "custom";
  int64_t vocab_size = 0;
  int64_t context_length = 0;
  int64_t num_layers = 0;
  int64_t num_heads = 0;
  int64_t dim = 0;
  Mlp mlp = Mlp::kGelu;
  Norm norm = Norm::kLayerNorm;
  float init_std = 0.02f;
  // Attention in the flash form (parallel/layers/attention.h): no T x T probabilities kept.
  bool flash_attention = false;
  // Mixture of experts (parallel/layers/moe.h): with moe.num_experts > 0, every block from
  // `first_dense_layers` on has a MoeLayer in its MLP slot (moe.ep is the model's to set).
  parallel::MoeOptions moe = {.num_experts = 0};
  int64_t first_dense_layers = 1;
  bool is_moe() const { return moe.num_experts > 0; }
  bool is_moe_layer(int64_t layer) const { return is_moe() && layer >= first_dense_layers; }

  // "tiny" (tests), "cpu-small" (6 layers, d 384, 6 heads, context 256, vocab 4096),
  // "gpt2-124m" (12 layers, d 768, 12 heads, context 1024, vocab 50257); mixtures of experts
  // (RMSNorm, SwiGLU, sigmoid router, one dense layer first): "tiny-moe" (tests: tiny with
  // 8 experts top-2 of hidden 32 + 1 shared) and "moe-small" (6 layers, d 256, 4 heads,
  // context 256, vocab 4096, 16 experts top-4 of hidden 128 + 1 shared).
  static absl::StatusOr<GptConfig> Preset(absl::string_view name);
  static std::vector<std::string> PresetNames();
  // InvalidArgument naming the field when sizes are not positive or heads do not divide dim.
  absl::Status Validate() const;
  // InvalidArgument saying which tp would work unless `tp` ranks can split this model: tp must
  // divide the heads and the MLP's hidden size and not exceed the vocabulary.
  absl::Status ValidateTensorParallel(int tp) const;
  // InvalidArgument saying what to change unless `ep` ranks can split the experts (ep must divide
  // them; a dense model needs ep 1) and the routing options hold (top-k <= experts, node-limited
  // groups dividing the experts, and with ep > 1 groups dividing ep: a group is the experts of
  // ep / groups consecutive ep ranks, one host's). `fold_tp` > 1: the experts are split over the
  // ep × fold_tp ranks (--moe_fold_tp), which must divide them, and the groups that product.
  absl::Status ValidateExpertParallel(int ep, int fold_tp = 1) const;
  // The MLP's hidden size: 4·dim (GELU), or 8/3·dim for SwiGLU (the same parameter count).
  int64_t MlpHidden() const;
  std::string ToString() const;
};

class GptModel {
 public:
  // config must be valid (and split by the tp group's size: ValidateTensorParallel). `tp`: the
  // tensor-parallel group (not owned; none by default), sequence parallelism (sequence lengths
  // must divide by tp; the parameters replicated over tp then get partial gradients,
  // ShardSpec::grad_partial_over) and the overlap of GEMMs with the tp collectives
  // (parallel/tensor/tensor_parallel.h). Its split and stats are the model's to set.
  // `ep`: the expert-parallel group of a MoE model (not owned; nullptr: none). A config whose
  // moe.ep is set (the ep × tp ranks, moe.ep_axis kEpTpAxis: parallel/shard.h) gives its
  // MoE layers that group instead.
  explicit GptModel(const GptConfig& config, const parallel::TensorParallelOptions& tp = {},
                    comm::Communicator* ep = nullptr);

  const GptConfig& config() const { return config_; }
  // The tensor-parallel group (nullptr: none).
  comm::Communicator* tp() const { return tp_.active() ? tp_.group : nullptr; }
  bool sequence_parallel() const { return tp_.sp(); }
  comm::Communicator* ep() const { return ep_; }
  // The group a parameter split over `axis` ("tp", "ep", "ep_tp") is split over (nullptr: none).
  comm::Communicator* AxisGroup(const std::string& axis) const;
  // Milliseconds spent waiting for tensor-parallel collectives since the last reset.
  double tp_wait_ms() const { return tp_stats_.wait_ms; }
  void ResetTpStats() { tp_stats_ = {}; }

  // Allocates every parameter and fills it from the counter-based RNG: weights ~ N(0, init_std)
  // (residual projections c_proj scaled by 1/√(2·layers), as GPT-2), biases 0, norm weights 1.
  void Initialize(uint64_t seed);
  // Only records how each parameter is initialised (Parameter::initializer), allocating nothing:
  // data parallelism then fills just what each rank holds (a ZeRO-3 shard).
  void SetInitializers(uint64_t seed);

  // inputs: i32 [B, T], T <= context_length. Returns logits [B, T, vocab] (vocabulary-parallel:
  // this rank's columns of them, [B, T, V_local]; with sequence parallelism as token rows,
  // [B·T, V_local]).
  runtime::Tensor Logits(parallel::Stash& stash, const runtime::Tensor& inputs);
  // Logits then the mean cross-entropy against targets (i32 [B, T]).
  float ForwardLoss(parallel::Stash& stash, const runtime::Tensor& inputs,
                    const runtime::Tensor& targets);
  // Backward of scale · (mean loss of the last ForwardLoss on this stash); adds into grads.
  void Backward(parallel::Stash& stash, float scale);

  // The model as units (pipeline stages are ranges of them): 0 the token and position
  // embeddings (input: ids [B, T]), 1..L the blocks, L + 1 ln_f, L + 2 the LM head (output:
  // logits). Each runs between the parameter-use hooks and rounds its output to the activation
  // dtype, as Logits / Backward do; B (input gradient) and W (weight gradient) separately.
  int num_units() const { return static_cast<int>(blocks_.size()) + 3; }
  // Sets what a micro-batch's stash needs before any unit runs (its sequence length).
  void BeginMicroBatch(parallel::Stash& stash, const runtime::Tensor& inputs) const;
  runtime::Tensor UnitForward(parallel::Stash& stash, int unit, const runtime::Tensor& x);
  runtime::Tensor UnitBackwardInput(parallel::Stash& stash, int unit, const runtime::Tensor& dy);
  void UnitBackwardWeight(parallel::Stash& stash, int unit);
  // The mean cross-entropy of `logits` (the head unit's output) against targets, and the
  // gradient of scale · it for the head's backward (rounded as a unit's output).
  float Loss(parallel::Stash& stash, const runtime::Tensor& logits, const runtime::Tensor& targets);
  runtime::Tensor LossBackward(parallel::Stash& stash, float scale);

  // Milliseconds the MoE layers waited for their expert-parallel exchanges since the last reset.
  double moe_exchange_wait_ms();
  void ResetMoeExchangeWait();
  // The MoE layers, in block order (empty for a dense model).
  std::vector<parallel::MoeLayer*> MoeLayers();
  // Tensors that are state but not trained (the MoE layers' balancing biases, f32, the same on
  // every rank), shared with the model, for checkpoints and exports; a pipeline rank lists only
  // its stages' (MoeLayer::held).
  std::vector<runtime::io::NamedTensor> Buffers();
  // After an optimizer step: each MoE layer's expert loads of the step, summed over `groups` (the
  // ranks that routed other tokens through the same layers: dp and ep; collective), update its
  // balancing bias when `update_bias`. Returns the loads, one vector per MoE layer.
  absl::StatusOr<std::vector<std::vector<int64_t>>> FinishMoeStep(
      const std::vector<comm::Communicator*>& groups, bool update_bias);
  // Every parameter once, in a fixed order (embedding first, then blocks, then ln_f).
  std::vector<parallel::Parameter*> Parameters();
  // The parameters each unit uses, in forward order: 0 the token and position embeddings, 1..L
  // the blocks, L + 1 ln_f, L + 2 the LM head (the tied token embedding again).
  std::vector<std::vector<parallel::Parameter*>> ParameterUnits();
  // Mixed precision on the CPU reference kernels: every unit's output (forward activations,
  // logits, and the gradients backward passes between units) is rounded to `dtype` (bf16, f16),
  // exactly what 16-bit storage holds; the kernels compute in f32. (The stash keeps what backward
  // needs in 16 bits: Stash::SetActivationDType.) f32 (the default) leaves them untouched.
  void SetActivationDType(runtime::DType dtype) { activation_dtype_ = dtype; }
  // Called around every unit's forward and backward from now on (nullptr: none). Not owned.
  void SetParameterUseHooks(parallel::ParameterUseHooks* hooks) { hooks_ = hooks; }
  parallel::Parameter* FindParameter(absl::string_view name);
  int64_t NumParameters();
  void ZeroGrad();
  void SetRecompute(bool recompute);

  // Training FLOPs per token (forward + backward), the PaLM estimate: 6·N + 12·L·T·C, with N the
  // parameters excluding position embeddings (the tied token embedding counts once, as the LM
  // head's matmul), L layers, T = seq_len, C = dim. The second term is attention's QKᵀ and P·V
  // without the causal discount.
  double TrainingFlopsPerToken(int64_t seq_len);

 private:
  GptConfig config_;
  parallel::TpStats tp_stats_;
  parallel::TensorParallelOptions tp_;  // split kNone; stats = &tp_stats_
  comm::Communicator* ep_ = nullptr;
  parallel::Embedding wte_;
  parallel::PositionEmbedding wpe_;
  std::vector<std::unique_ptr<parallel::TransformerBlock>> blocks_;
  std::unique_ptr<parallel::Layer> ln_f_;
  parallel::TiedLmHead lm_head_;
  parallel::CrossEntropyLoss loss_;
  parallel::ParameterUseHooks* hooks_ = nullptr;
  runtime::DType activation_dtype_ = runtime::DType::kF32;

  std::vector<parallel::Layer*> UnitLayers(int unit);
  runtime::Tensor UnitBackward(parallel::Stash& stash, int unit, const runtime::Tensor& dy);
  // Runs `body` between the hooks of `unit` in `pass`.
  template <typename F>
  runtime::Tensor InUnit(int unit, parallel::ParameterUseHooks::Pass pass, F&& body);
};

}  // namespace loom::models
