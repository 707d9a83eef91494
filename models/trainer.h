// GPT training, on one rank or data-parallel: data, model, optimizer, schedule, data parallelism
// (parallel/data/data_parallel.h: DDP, ZeRO-1/2/3, mixed precision), checkpoints and evaluation
// behind one object that examples/train_gpt drives.
//
//   TrainOptions opt;                    // preset "tiny", embedded data, AdamW
//   opt.steps = 200;
//   LOOM_ASSIGN_OR_RETURN(std::unique_ptr<Trainer> t, Trainer::Create(opt));
//   while (t->step() < opt.steps) {
//     LOOM_ASSIGN_OR_RETURN(StepMetrics m, t->Step());
//   }
//   LOOM_RETURN_IF_ERROR(t->SaveCheckpoint());
//
// Everything is deterministic: the same options give bitwise identical losses and weights, and a
// run resumed from a checkpoint continues exactly as the uninterrupted run would have.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "comm/communicator.h"
#include "models/data/batch_sampler.h"
#include "models/data/token_dataset.h"
#include "models/gpt.h"
#include "models/gpt_stages.h"
#include "optim/loss_scaler.h"
#include "optim/lr_schedule.h"
#include "optim/optimizer.h"
#include "parallel/context.h"
#include "parallel/data/data_parallel.h"
#include "parallel/lanes.h"
#include "parallel/pipeline/channels.h"
#include "parallel/pipeline/executor.h"
#include "parallel/pipeline/ir.h"

namespace loom::models {

struct TrainOptions {
  std::string preset = "tiny";
  int64_t vocab_size = 0;  // 0: the preset's; must cover the data's vocabulary
  int64_t num_layers = 0;  // 0: the preset's (fewer for quick runs of a large preset's shapes)
  std::string data;        // token file (llm.c shard or text bytes); empty: the embedded task
  int64_t steps = 100;
  int64_t batch = 8;  // sequences per optimizer step, over all data ranks (dp × ep)
  int dp = 1;         // data-parallel ranks (the size of the group given to Create)
  int tp = 1;         // tensor-parallel ranks (heads, MLP and vocabulary split over them)
  bool sequence_parallel = false;  // shard norms/residuals along the tokens over tp (tp >= 2)
  int tp_chunks = 4;               // GEMM chunks pipelined with the tp collectives (1: none)
  int pp = 1;                      // pipeline stages' ranks (docs/pipeline_parallel.md)
  // Expert parallelism (a MoE preset; docs/expert_parallel.md): the experts split over ep ranks,
  // which also take separate slices of the batch (data ranks: dp × ep).
  int ep = 1;
  // MoE routing overrides (negative / 0: the preset's): capacity factor (0 dropless), sequence
  // aux-loss coefficient, balancing-bias update rate, node-limited routing (groups, top groups).
  double moe_capacity_factor = -1.0;
  float moe_aux_loss_coef = -1.0f;
  float moe_bias_rate = -1.0f;
  int moe_groups = 0;
  int moe_top_groups = 0;
  // With --ep: token chunks per MoE layer, each exchange overlapped with another chunk's experts
  // (false: waited for as issued, the same bits; the baseline for exposed_a2a_ms).
  int moe_chunks = 2;
  bool moe_overlap = true;
  // DeepSeek's dual micro-batch overlap: each micro-batch runs as two halves (of its sequences)
  // that take turns (parallel/lanes.h), handing over wherever a MoE layer waits for an exchange,
  // so one half computes (attention, router, experts) while the other's all-to-all travels. With
  // moe_overlap false the halves take the same turns but each exchange is waited for before
  // handing over: the same arithmetic, bitwise (the baseline). With pp > 1 (schedule dualpipe-v
  // only) the schedule's paired F and B of two micro-batches take turns instead (DualPipe's
  // overlap; no halves). Not with ZeRO-3.
  bool moe_dual_batch = false;
  // Hierarchical dispatch (DeepEP's two hops over the node-limited groups, one group per host;
  // needs ep > 1 and moe_groups > 1): a token crosses once to each group holding one of its
  // experts and is forwarded inside it; each group's partial output crosses back once.
  bool moe_hier_dispatch = false;
  // Expert parallelism folded over tensor parallelism (Megatron-Core's MoE parallel folding; needs
  // tp > 1): the MoE layers' expert group is the ep x tp ranks, each holding E/(ep·tp) experts
  // and routing its share of the tokens; without it each rank holds E/ep experts (the same on
  // every tp rank).
  bool moe_fold_tp = false;
  // With --ep: the dtype of the forward dispatch (fp32, bf16, fp8: e4m3 with per-128-element
  // scales) and of the combine and backward exchanges (fp32, bf16).
  std::string moe_dispatch = "fp32";
  std::string moe_combine = "fp32";
  std::string attention = "probs";  // probs (keeps the T x T probabilities) or flash
  std::string schedule = "1f1b";    // with pp > 1: gpipe, 1f1b, interleaved, zb-h1, zb-v
  int micro_batches = 0;            // with pp > 1: per step and data-parallel rank (0: pp)
  int virtual_stages = 2;           // interleaved: chunks per rank
  bool tp_overlap = true;           // false: same chunks, each collective waited for (baseline)
  int zero = 0;                     // ZeRO stage 0 (DDP) .. 3, see parallel/data/data_parallel.h
  int64_t grad_accum = 1;  // micro-batches per step; each rank's micro-batch is batch/(dp·this)
  int64_t bucket_bytes = parallel::DataParallel::Options{}.bucket_bytes;  // gradient bucket size
  bool overlap_grad_reduce = true;  // false: reduce only after backward (a measurement baseline)
  // ZeRO-1/2: the updated parameters' all-gathers overlap the next forward (false: the step waits
  // for them at its end, the baseline). Either way the same values, bitwise.
  bool overlap_param_gather = true;
  // The tied token embedding's gradient in two parts: the LM head's reduced with its bucket
  // during backward, the lookup's all-gathered as (token ids, rows) after it
  // (parallel::DataParallel::Options::sparse_embedding). Not with pp or ep.
  bool sparse_embedding_grad = false;
  // Working parameters and activations: fp32, bf16 or fp16 (f32 master weights either way; fp16
  // with dynamic loss scaling). Gradients travel in grad_reduce_dtype (fp32, bf16, fp16).
  std::string precision = "fp32";
  std::string grad_reduce_dtype = "fp32";
  // bf16 only: the forward GEMMs take bf16 activations too, as PyTorch's CPU autocast (faster,
  // further from the f32 curve; see parallel::Stash::SetAutocast).
  bool autocast = false;
  // HSDP: ZeRO (stages 1-3) shards within groups of this many consecutive dp ranks (the ranks of
  // a host under mpirun's default placement) and replicates across them; 0: shard over all dp
  // ranks. Gradients cross between the groups in hsdp_reduce_dtype (fp32, bf16, fp16).
  int hsdp_shard = 0;
  std::string hsdp_reduce_dtype = "fp32";
  // fp32/bf16: a step whose loss or gradients are not finite (on any rank) is skipped (no update,
  // its batch consumed); the run stops with an error after this many such steps in a row.
  int nonfinite_skips = 3;
  // Tests: an Inf gradient on dp rank 0 at this step (fp16: an overflow the loss scaler skips;
  // fp32/bf16: a non-finite step), on its first `inject_overflow_count` tries.
  int64_t inject_overflow_step = 0;
  int inject_overflow_count = 1;
  int64_t seq_len = 0;              // 0: the model's context length
  std::string optimizer = "adamw";  // adamw | sgd
  float lr = 1e-3f;
  float min_lr = 0.0f;  // cosine floor; negative means lr / 10
  int64_t warmup_steps = 0;
  float weight_decay = 0.1f;
  float beta1 = 0.9f;
  float beta2 = 0.95f;
  float momentum = 0.9f;   // sgd
  float grad_clip = 1.0f;  // <= 0 disables
  uint64_t seed = 1337;
  bool recompute = false;
  std::string save_dir;      // checkpoints go to <save_dir>/step-N
  int keep_checkpoints = 3;  // committed checkpoints kept in save_dir (the newest; 0: all)
  bool resume = false;       // continue from the newest checkpoint in save_dir
  std::string init_from;     // safetensors weights to start from (instead of random init)
  // Where the model, its gradients, activations and optimizer state live: nullptr for the host,
  // else a device's allocator (cuda::DeviceAllocator(); train_gpt's --device cuda). Dense models
  // (LayerNorm, GELU) and AdamW for now: ValidateTrainOptions refuses the rest. Collectives
  // between ranks are staged through host memory (comm::Communicator). Not owned.
  runtime::Allocator* device = nullptr;
};

struct StepMetrics {
  int64_t step = 0;  // 1-based number of the step just taken
  float loss = 0.0f;
  float lr = 0.0f;
  double grad_norm = 0.0;
  double step_ms = 0.0;
  double tokens_per_s = 0.0;
  double gflops = 0.0;             // achieved, from GptModel::TrainingFlopsPerToken
  double exposed_reduce_ms = 0.0;  // waiting for gradient reductions after backward
  double exposed_gather_ms = 0.0;  // units waiting for their parameters' all-gathers (ZeRO)
  double exposed_tp_ms = 0.0;      // waiting for tensor-parallel collectives (forward + backward)
  double exposed_a2a_ms = 0.0;     // waiting for the MoE layers' expert-parallel exchanges
  float loss_scale = 1.0f;         // the scale this step's backward used (fp16; else 1)
  bool skipped = false;            // fp16: gradients overflowed on some rank, no update
  // MoE: per MoE layer, the (token, choice) slots routed to each expert in this step over all
  // data ranks (before capacity drops), and the slots dropped by capacity.
  std::vector<std::vector<int64_t>> expert_load;
  int64_t dropped_tokens = 0;
};

class Trainer {
 public:
  // Validates the options (InvalidArgument naming the flag), loads the data, builds and
  // initialises the model (random, --init_from, or the latest checkpoint with --resume) and the
  // data-parallel engine over `dp_group` (size options.dp; nullptr: a group of one rank). Every
  // rank of the group calls Create with the same options; rank r trains on its slice of each
  // global batch. `dp_group` must outlive the trainer.
  static absl::StatusOr<std::unique_ptr<Trainer>> Create(const TrainOptions& options,
                                                         comm::Communicator* dp_group = nullptr);
  // The same over a mesh's groups: context.dp of size options.dp, context.tp of size options.tp
  // and context.pp of size options.pp (nullptr when 1). Ranks of one tp group see the same data and
  // hold different shards of the model; checkpoints and the metrics are the same as at tp 1.
  static absl::StatusOr<std::unique_ptr<Trainer>> Create(const TrainOptions& options,
                                                         parallel::ParallelContext context);

  // One optimizer step on the next batch. Under fp16 a step whose gradients overflowed on any rank
  // is skipped on every rank (metrics.skipped; step() does not advance, the batch is consumed)
  // and the loss scale halves.
  absl::StatusOr<StepMetrics> Step();
  // Pipeline (pp > 1): the schedule every rank runs.
  const parallel::pipeline::Schedule* pipeline_schedule() const { return pipeline_.get(); }
  // The ops this rank ran in the last step, timed: the pipeline schedule's (pp > 1), or each
  // micro-batch's forward (F, stage 0) and backward (B); then the optimizer step (from the end of
  // the last backward: waiting for the gradient reductions, clipping, the update), then the step's
  // data-parallel reductions and parameter all-gathers (TraceEvent::dp_bucket).
  std::vector<parallel::pipeline::TraceEvent> step_trace() const;
  // Writes a checkpoint of the current step to options.save_dir: the whole f32 weights and the
  // whole optimizer state, whatever the layout (ZeRO and tensor-parallel shards are gathered; the
  // rank with dp and tp rank 0 writes), so any layout can resume it. Collective over the job.
  absl::Status SaveCheckpoint();
  // Makes every parameter's full value readable (ZeRO-3 gathers them; see
  // DataParallel::GatherParameters). Collective over the group.
  absl::Status GatherParameters() { return dp_->GatherParameters(); }
  // Writes the whole weights to a .safetensors file (WriteGptWeights), whatever the layout (one
  // rank writes). Collective over the job.
  absl::Status ExportWeights(const std::string& path);
  // Mean loss over the first `batches` eval batches of `dataset` (see data::EvalBatch).
  absl::StatusOr<double> Evaluate(const data::TokenDataset& dataset, int64_t batches);

  int64_t step() const { return optimizer_->step(); }
  int64_t tokens_per_step() const { return options_.batch * seq_len_; }
  int64_t seq_len() const { return seq_len_; }
  GptModel& model() { return *model_; }
  parallel::DataParallel& data_parallel() { return *dp_; }
  comm::Communicator& dp_group() { return *dp_group_; }
  const data::TokenDataset& dataset() const { return *dataset_; }
  const TrainOptions& options() const { return options_; }
  // Where --resume restored from (empty if not resumed).
  const std::string& resumed_from() const { return resumed_from_; }

 private:
  Trainer(const TrainOptions& options, std::unique_ptr<data::TokenDataset> dataset,
          std::unique_ptr<GptModel> model, int64_t seq_len);
  // Restores weights, data position and loss scale; returns the whole optimizer state, which
  // needs the data-parallel layout before it can be loaded.
  absl::StatusOr<std::vector<runtime::io::NamedTensor>> Resume();
  std::string StateJson() const;
  // Every parameter whole, in the model's order (collective over tp and pp: tensor-parallel
  // shards gathered; a pipeline's stages on its rank 0, the other pipeline ranks returning
  // theirs).
  absl::StatusOr<std::vector<runtime::io::NamedTensor>> WholeWeights();
  // Gathers the whole weights (and optimizer state) and has one rank write them with `write`;
  // every rank joins before returning. Collective over the job.
  using WholeWriter = std::function<absl::Status(const std::vector<runtime::io::NamedTensor>&,
                                                 const std::vector<runtime::io::NamedTensor>&)>;
  absl::Status WriteWhole(bool optimizer_state, const WholeWriter& write);
  // The whole optimizer state of every parameter this rank holds (collective over dp, tp and pp:
  // a pipeline's stages on its rank 0), and this rank's shard of whole state (local).
  absl::StatusOr<std::vector<runtime::io::NamedTensor>> GatherOptimizerState();
  absl::StatusOr<std::vector<runtime::io::NamedTensor>> ShardOptimizerState(
      const std::vector<runtime::io::NamedTensor>& whole) const;
  // The parameter whose optimizer state `state_name` ("<parameter><suffix>") is, or nullptr.
  const parallel::Parameter* StateOwner(const std::string& state_name) const;
  // Serialises and writes the checkpoint files (rank 0).
  absl::Status WriteCheckpoint(const std::vector<runtime::io::NamedTensor>& weights,
                               const std::vector<runtime::io::NamedTensor>& optimizer_state);
  // The ranks whose data differ: dp and, with expert parallelism, ep.
  std::vector<comm::Communicator*> DataGroups() const;
  // The mean of `local` over the data ranks (dp × ep), and whether any of them set `flag`.
  struct RankMean {
    float value = 0.0f;
    bool any = false;
  };
  absl::StatusOr<RankMean> MeanOverRanks(float local, bool flag);
  // Ends a step without an update (metrics.skipped); the batch stays consumed.
  absl::StatusOr<StepMetrics> SkipStep(StepMetrics& m, std::chrono::steady_clock::time_point start);
  // fp32/bf16, a non-finite loss or gradient norm: SkipStep, or after options_.nonfinite_skips in
  // a row an error naming the step and the first parameter with a non-finite gradient.
  absl::StatusOr<StepMetrics> SkipNonFiniteStep(StepMetrics& m,
                                                std::chrono::steady_clock::time_point start);
  void InjectOverflowForTesting();
  // MoE: the step's expert loads into `m` (summed over the data ranks; collective) and, unless
  // the step was skipped, the balancing biases updated from them.
  absl::Status FinishMoeStep(StepMetrics& m);
  // The forward and backward passes of a step: micro-batches in turn, or the pipeline schedule.
  // Returns the loss of this rank's micro-batches (pipeline: the last stage's, summed over pp).
  absl::StatusOr<float> RunMicroBatches(const data::Batch& batch, float loss_scale);
  absl::Status CreatePipeline();
  // Step time and throughput; the end of the optimizer's trace event.
  void FinishMetrics(StepMetrics& m, std::chrono::steady_clock::time_point start);

  TrainOptions options_;
  // The communicators the trainer owns come first, so they are destroyed last: after everything
  // that holds tensors from their shared arenas (the model's parameters, data parallelism's
  // buffers, the optimizer's state, the pipeline's stashes).
  std::unique_ptr<comm::Communicator> own_group_;  // when Create got no group
  // --moe_fold_tp: the ep x tp ranks. --moe_hier_dispatch: the rail group and this rank's expert
  // group, split from ep (or ep_tp_).
  std::unique_ptr<comm::Communicator> ep_tp_, ep_rail_, ep_host_;
  // HSDP: the shard group and the replica group, split from dp_group_.
  std::unique_ptr<comm::Communicator> shard_group_, replica_group_;
  // Pipeline (pp > 1): the stage boundaries' links and the tied embedding's copies.
  std::unique_ptr<parallel::pipeline::Channels> channels_;
  std::unique_ptr<comm::Communicator> embedding_group_;
  std::unique_ptr<data::TokenDataset> dataset_;
  std::unique_ptr<GptModel> model_;
  int64_t seq_len_;
  comm::Communicator* dp_group_ = nullptr;
  parallel::ParallelContext context_;  // dp is dp_group_
  std::unique_ptr<parallel::DataParallel> dp_;
  // Pipeline (pp > 1).
  std::unique_ptr<parallel::pipeline::Schedule> pipeline_;
  std::unique_ptr<GptStages> stages_;
  std::unique_ptr<parallel::pipeline::Executor> executor_;
  parallel::pipeline::TraceEvent optimizer_event_{
      .instr = {.kind = parallel::pipeline::OpKind::kOptimizerStep}};
  // Without a pipeline: the last step's forward and backward of each micro-batch (or half).
  std::vector<parallel::pipeline::TraceEvent> compute_events_;
  optim::DynamicLossScaler scaler_;
  int injected_ = 0;  // InjectOverflowForTesting's Infs so far
  int nonfinite_in_a_row_ = 0;
  int64_t resumed_step_ = 0;
  std::unique_ptr<data::BatchSampler> sampler_;
  parallel::Lanes lanes_;  // --moe_dual_batch: the micro-batch halves
  std::unique_ptr<optim::Optimizer> optimizer_;
  optim::CosineSchedule schedule_;
  std::string resumed_from_;
};

// InvalidArgument naming the flag and what to change (Unimplemented for combinations not supported
// yet) unless the options are consistent; needs no data and no communication, so every rank can
// check before the first collective. Trainer::Create calls it too.
absl::Status ValidateTrainOptions(const TrainOptions& options);
// The model's config: the preset with the options' overrides (layers, vocabulary, MoE routing).
absl::StatusOr<GptConfig> ModelConfig(const TrainOptions& options);
// The micro-batches per step of a pipeline run (--micro_batches, default --pp).
int PipelineMicroBatches(const TrainOptions& options);
// The dtype a --precision (or MoE exchange dtype) name stands for: bf16, f16 ("fp16"), else f32.
runtime::DType PrecisionDType(const std::string& name);

// The dataset named by `path` (LoadTokenFile); when empty, the embedded synthetic task; "random":
// 2^20 tokens drawn uniformly from [0, vocab_size) (for benchmarks against twins that train on
// random tokens, e.g. scripts/torch_reference: the same token statistics, so the same MoE routing
// balance).
absl::StatusOr<data::TokenDataset> LoadDataset(const std::string& path, uint64_t seed,
                                               int64_t vocab_size);

}  // namespace loom::models
