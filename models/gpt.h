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
#include "parallel/layers/norm.h"
#include "parallel/tensor/tensor_parallel.h"

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

  // "tiny" (tests), "cpu-small" (6 layers, d 384, 6 heads, context 256, vocab 4096),
  // "gpt2-124m" (12 layers, d 768, 12 heads, context 1024, vocab 50257).
  static absl::StatusOr<GptConfig> Preset(absl::string_view name);
  static std::vector<std::string> PresetNames();
  // InvalidArgument naming the field when sizes are not positive or heads do not divide dim.
  absl::Status Validate() const;
  // InvalidArgument saying which tp would work unless `tp` ranks can split this model: tp must
  // divide the heads and the MLP's hidden size and not exceed the vocabulary.
  absl::Status ValidateTensorParallel(int tp) const;
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
  explicit GptModel(const GptConfig& config, const parallel::TensorParallelOptions& tp = {});

  const GptConfig& config() const { return config_; }
  // The tensor-parallel group (nullptr: none).
  comm::Communicator* tp() const { return tp_.active() ? tp_.group : nullptr; }
  bool sequence_parallel() const { return tp_.sp(); }
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
