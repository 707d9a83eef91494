#include "models/trainer.h"

#include <algorithm>
#include <chrono>
#include <cstring>
#include <limits>
#include <nlohmann/json.hpp>
#include <optional>
#include <random>
#include <tuple>

#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "comm/local/local_backend.h"
#include "models/data/synthetic_task.h"
#include "models/gpt_weights.h"
#include "optim/grad_norm.h"
#include "parallel/config_agreement.h"
#include "parallel/pipeline/schedules/schedules.h"
#include "parallel/shard.h"
#include "runtime/base/clock.h"
#include "runtime/base/logging.h"
#include "runtime/base/status_macros.h"
#include "runtime/io/checkpoint.h"

namespace loom::models {

using runtime::Tensor;
namespace io = runtime::io;

namespace {

constexpr int64_t kEmbeddedTokens = int64_t{1} << 20;
constexpr char kModelFile[] = "model.safetensors";
constexpr char kOptimizerFile[] = "optimizer.safetensors";
constexpr char kStateFile[] = "trainer.json";

std::unique_ptr<optim::Optimizer> MakeOptimizer(const TrainOptions& o) {
  if (o.optimizer == "sgd") {
    return std::make_unique<optim::Sgd>(
        optim::SgdOptions{.momentum = o.momentum, .weight_decay = o.weight_decay});
  }
  return std::make_unique<optim::AdamW>(optim::AdamWOptions{
      .beta1 = o.beta1, .beta2 = o.beta2, .eps = 1e-8f, .weight_decay = o.weight_decay});
}

// The options a resumed run must share with the run that wrote the checkpoint.
// The learning-rate schedule as checkpoints record it (a resume must continue the same one).
nlohmann::json ScheduleJson(const optim::CosineScheduleOptions& o) {
  return {{"max_lr", o.max_lr},
          {"min_lr", o.min_lr},
          {"warmup_steps", o.warmup_steps},
          {"total_steps", o.total_steps}};
}

nlohmann::json RunIdentity(const TrainOptions& o, const GptConfig& c, int64_t seq_len) {
  return {{"preset", o.preset}, {"vocab_size", c.vocab_size}, {"num_layers", c.num_layers},
          {"data", o.data},     {"batch", o.batch},           {"seq_len", seq_len},
          {"seed", o.seed},     {"optimizer", o.optimizer}};
}

// Rank 0 of `group` receives every other rank's tensors and adds those whose names it does not
// hold yet; the others send theirs and keep them. Collective over `group`.
absl::StatusOr<std::vector<io::NamedTensor>> UnionOnRankZero(std::vector<io::NamedTensor> mine,
                                                             comm::Communicator& group,
                                                             runtime::MemoryTag tag) {
  using runtime::DType;
  using runtime::MemoryTag;
  auto words_for = [](int64_t bytes) { return std::max<int64_t>(1, (bytes + 7) / 8); };
  if (group.rank() != 0) {
    LOOM_ASSIGN_OR_RETURN(const std::string bytes, io::SerializeSafetensors(mine));
    Tensor size =
        Tensor::FromVector<int64_t>({1}, {static_cast<int64_t>(bytes.size())}, MemoryTag::kComm);
    LOOM_RETURN_IF_ERROR(group.Send(size, 0)->Wait());
    Tensor words =
        Tensor::Zeros({words_for(size.data<int64_t>()[0])}, DType::kI64, MemoryTag::kComm);
    std::memcpy(words.raw_data(), bytes.data(), bytes.size());
    LOOM_RETURN_IF_ERROR(group.Send(words, 0)->Wait());
    return mine;
  }
  absl::flat_hash_set<std::string> held;
  for (const io::NamedTensor& t : mine) held.insert(t.name);
  for (int r = 1; r < group.size(); ++r) {
    Tensor size = Tensor::Empty({1}, DType::kI64, MemoryTag::kComm);
    LOOM_RETURN_IF_ERROR(group.Recv(size, r)->Wait());
    const int64_t bytes = size.data<int64_t>()[0];
    Tensor words = Tensor::Empty({words_for(bytes)}, DType::kI64, MemoryTag::kComm);
    LOOM_RETURN_IF_ERROR(group.Recv(words, r)->Wait());
    LOOM_ASSIGN_OR_RETURN(
        io::SafetensorsFile theirs,
        io::ParseSafetensors(absl::string_view(static_cast<const char*>(words.raw_data()), bytes),
                             absl::StrCat("pipeline rank ", r, "'s tensors"), tag));
    for (io::NamedTensor& t : theirs.tensors) {
      if (held.insert(t.name).second) mine.push_back(std::move(t));
    }
  }
  return mine;
}

}  // namespace

runtime::DType PrecisionDType(const std::string& name) {
  if (name == "bf16") return runtime::DType::kBF16;
  if (name == "fp16") return runtime::DType::kF16;
  return runtime::DType::kF32;
}

absl::StatusOr<GptConfig> ModelConfig(const TrainOptions& o) {
  LOOM_ASSIGN_OR_RETURN(GptConfig config, GptConfig::Preset(o.preset));
  if (o.vocab_size > 0) config.vocab_size = o.vocab_size;
  if (o.num_layers > 0) config.num_layers = o.num_layers;
  config.flash_attention = o.attention == "flash";
  parallel::MoeOptions& moe = config.moe;
  if (o.moe_capacity_factor >= 0) moe.capacity_factor = o.moe_capacity_factor;
  if (o.moe_aux_loss_coef >= 0) moe.aux_loss_coef = o.moe_aux_loss_coef;
  if (o.moe_bias_rate >= 0) moe.bias_update_rate = o.moe_bias_rate;
  if (o.moe_groups > 0) moe.groups = o.moe_groups;
  if (o.moe_top_groups > 0) moe.top_groups = o.moe_top_groups;
  moe.chunks = o.moe_chunks;
  moe.overlap = o.moe_overlap;
  moe.dispatch_dtype =
      o.moe_dispatch == "fp8" ? runtime::DType::kF8E4M3 : PrecisionDType(o.moe_dispatch);
  moe.combine_dtype = PrecisionDType(o.moe_combine);
  return config;
}

int PipelineMicroBatches(const TrainOptions& o) {
  return o.micro_batches > 0 ? o.micro_batches : o.pp;
}

namespace {

// A forward or backward that ran from `start_us` to `end_us` (no pipeline: stage 0).
parallel::pipeline::TraceEvent ComputeEvent(parallel::pipeline::OpKind kind, int64_t micro_batch,
                                            int64_t start_us, int64_t end_us) {
  return {.instr = {.kind = kind, .micro_batch = static_cast<int>(micro_batch), .stage = 0},
          .start_us = start_us,
          .end_us = end_us};
}

// What --moe_dual_batch needs: halves of equal size, and no layout that it does not compose with.
absl::Status ValidateDualBatch(const TrainOptions& o) {
  if (!o.moe_dual_batch) return absl::OkStatus();
  if (o.zero > 2) {
    return absl::InvalidArgumentError(
        "--moe_dual_batch needs --zero 0, 1 or 2: ZeRO-3 releases a layer's parameters after "
        "one half's use while the other half still needs them");
  }
  if (o.pp > 1) {  // the schedule's F and B pairs take turns instead of halves
    if (o.schedule != "dualpipe-v") {
      return absl::InvalidArgumentError(
          absl::StrCat("--moe_dual_batch with --pp overlaps the paired forward and backward of two "
                       "micro-batches, which only --schedule dualpipe-v has; got --schedule ",
                       o.schedule));
    }
    return absl::OkStatus();
  }
  const int64_t ranks = static_cast<int64_t>(o.dp) * o.ep * o.grad_accum;
  if (o.batch % (2 * ranks) != 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "--moe_dual_batch splits each micro-batch's sequences into two halves: --batch ", o.batch,
        " must be a multiple of 2 x --dp ", o.dp, " x --ep ", o.ep, " x --grad_accum ",
        o.grad_accum, " = ", 2 * ranks));
  }
  return absl::OkStatus();
}

// What --pp needs and what it does not compose with yet.
absl::Status ValidatePipelineOptions(const TrainOptions& o) {
  auto bad = [](auto... parts) { return absl::InvalidArgumentError(absl::StrCat(parts...)); };
  const int m = PipelineMicroBatches(o);
  if (o.grad_accum != 1) {
    return bad("with --pp, --micro_batches sets the micro-batches per step; leave --grad_accum 1");
  }
  if (o.hsdp_shard > 0) return bad("--pp with --hsdp_shard is not supported yet");
  if (o.batch % (o.dp * o.ep * m) != 0) {
    return bad("--batch ", o.batch, " must be a multiple of --dp ", o.dp,
               o.ep > 1 ? absl::StrCat(" x --ep ", o.ep) : "", " x --micro_batches ", m, " = ",
               o.dp * o.ep * m);
  }
  LOOM_ASSIGN_OR_RETURN(
      parallel::pipeline::Schedule s,
      parallel::pipeline::MakeSchedule(
          o.schedule, {.ranks = o.pp, .micro_batches = m, .virtual_stages = o.virtual_stages}));
  absl::StatusOr<GptConfig> config = GptConfig::Preset(o.preset);
  if (config.ok()) {
    const int64_t layers = o.num_layers > 0 ? o.num_layers : config->num_layers;
    if (layers < s.placement.stages()) {
      return bad("--schedule ", o.schedule, " at --pp ", o.pp, " cuts the model into ",
                 s.placement.stages(), " stages, but ", o.preset, " has ", layers,
                 " blocks; use a smaller --pp or more --num_layers");
    }
  }
  return absl::OkStatus();
}

// Tensors made without a named allocator go to `device` (nullptr: as before) while it lives.
class OnDevice {
 public:
  explicit OnDevice(runtime::Allocator* device) {
    if (device != nullptr) scope_.emplace(device);
  }

 private:
  std::optional<runtime::AllocatorScope> scope_;
};

// Device tensors among `tensors` replaced by host copies (checkpoints and exports are written
// from the host).
void CopyToHost(std::vector<io::NamedTensor>& tensors) {
  for (io::NamedTensor& t : tensors) {
    if (t.tensor.device() != runtime::Device::kCpu) {
      t.tensor = t.tensor.Clone(&runtime::Allocator::Default());
    }
  }
}

// The batch's tokens copied to `device` (nullptr: left on the host).
void CopyTo(runtime::Allocator* device, data::Batch& batch) {
  if (device == nullptr) return;
  batch.inputs = batch.inputs.Clone(device);
  batch.targets = batch.targets.Clone(device);
}

}  // namespace

absl::Status ValidateTrainOptions(const TrainOptions& o) {
  auto bad = [](auto... parts) { return absl::InvalidArgumentError(absl::StrCat(parts...)); };
  if (o.steps < 0) return bad("--steps must be >= 0, got ", o.steps);
  if (o.batch < 1) return bad("--batch must be >= 1, got ", o.batch);
  if (o.seq_len < 0) return bad("--seq_len must be >= 0 (0: the context length), got ", o.seq_len);
  if (o.vocab_size < 0) return bad("--vocab_size must be >= 0, got ", o.vocab_size);
  if (o.num_layers < 0) return bad("--num_layers must be >= 0, got ", o.num_layers);
  if (o.optimizer != "adamw" && o.optimizer != "sgd") {
    return bad("--optimizer must be adamw or sgd, got '", o.optimizer, "'");
  }
  if (o.resume && o.save_dir.empty()) return bad("--resume needs --save_dir");
  if (o.resume && !o.init_from.empty()) {
    return bad("--resume and --init_from both choose the starting weights; pass one");
  }
  if (o.dp < 1) return bad("--dp must be >= 1, got ", o.dp);
  if (o.tp < 1) return bad("--tp must be >= 1, got ", o.tp);
  if (o.tp_chunks < 1) return bad("--tp_chunks must be >= 1, got ", o.tp_chunks);
  if (o.pp < 1) return bad("--pp must be >= 1, got ", o.pp);
  if (o.pp > 1) LOOM_RETURN_IF_ERROR(ValidatePipelineOptions(o));
  if (o.ep < 1) return bad("--ep must be >= 1, got ", o.ep);
  if (o.moe_chunks < 1) return bad("--moe_chunks must be >= 1, got ", o.moe_chunks);
  if (o.moe_dispatch != "fp32" && o.moe_dispatch != "bf16" && o.moe_dispatch != "fp8") {
    return bad("--moe_dispatch must be fp32, bf16 or fp8, got '", o.moe_dispatch, "'");
  }
  if (o.moe_combine != "fp32" && o.moe_combine != "bf16") {
    return bad("--moe_combine must be fp32 or bf16, got '", o.moe_combine, "'");
  }
  if (o.moe_capacity_factor >= 0 || o.moe_aux_loss_coef >= 0 || o.moe_bias_rate >= 0 ||
      o.moe_groups > 0 || o.moe_top_groups > 0 || o.ep > 1 || o.moe_dispatch != "fp32" ||
      o.moe_combine != "fp32" || o.moe_dual_batch || o.moe_hier_dispatch || o.moe_fold_tp) {
    if (o.moe_fold_tp && o.tp < 2) {
      return bad(
          "--moe_fold_tp splits the MoE layers' experts over the ep x tp ranks; it needs --tp > 1, "
          "got --tp ",
          o.tp);
    }
    absl::StatusOr<GptConfig> config = ModelConfig(o);
    if (config.ok()) {
      if (!config->is_moe()) {
        return bad(
            "--ep and the --moe_* flags need a mixture-of-experts model (--preset moe-small "
            "or tiny-moe); ",
            o.preset, " is dense");
      }
      const int fold = o.moe_fold_tp ? o.tp : 1;
      LOOM_RETURN_IF_ERROR(config->ValidateExpertParallel(o.ep, fold));
      if (o.moe_hier_dispatch && (o.ep * fold < 2 || config->moe.groups < 2)) {
        return bad(
            "--moe_hier_dispatch sends a token once to each expert group (host) that holds one "
            "of its experts and forwards it inside; it needs --ep > 1 (or --moe_fold_tp) and "
            "--moe_groups > 1 (one group per host), got --ep ",
            o.ep, " and ", config->moe.groups, " group(s)");
      }
    }
  }
  if (o.sequence_parallel && o.tp < 2) {
    return bad(
        "--sequence_parallel shards activations over the tensor-parallel ranks; it needs "
        "--tp >= 2, got --tp ",
        o.tp);
  }
  if (o.tp > 1) {  // the preset's shape must split (data files only widen the vocabulary)
    absl::StatusOr<GptConfig> config = GptConfig::Preset(o.preset);
    if (config.ok()) {
      if (o.vocab_size > 0) config->vocab_size = o.vocab_size;
      LOOM_RETURN_IF_ERROR(config->ValidateTensorParallel(o.tp));
      const int64_t seq_len = o.seq_len > 0 ? o.seq_len : config->context_length;
      if (o.sequence_parallel && seq_len % o.tp != 0) {
        return bad("--sequence_parallel splits each sequence's ", seq_len, " tokens over --tp ",
                   o.tp, "; choose a --seq_len that divides by ", o.tp);
      }
      if (config->is_moe() && seq_len % o.tp != 0) {
        return bad("the mixture-of-experts layers of ", o.preset, " split each sequence's ",
                   seq_len, " tokens over --tp ", o.tp, "; choose a --seq_len that divides by ",
                   o.tp);
      }
    }
  }
  if (o.attention != "probs" && o.attention != "flash") {
    return bad("--attention must be probs or flash, got '", o.attention, "'");
  }
  if (o.zero < 0 || o.zero > 3) return bad("--zero must be 0, 1, 2 or 3, got ", o.zero);
  if (o.grad_accum < 1) return bad("--grad_accum must be >= 1, got ", o.grad_accum);
  if (o.bucket_bytes < 4) return bad("--bucket_mb must give at least 4 bytes");
  LOOM_RETURN_IF_ERROR(ValidateDualBatch(o));
  const int64_t per_step = o.dp * o.ep * o.grad_accum;  // micro-batches over the data ranks
  if (o.pp == 1 && o.batch % per_step != 0) {
    return bad("--batch ", o.batch, " must be a multiple of --dp ", o.dp,
               o.ep > 1 ? absl::StrCat(" x --ep ", o.ep) : "", " x --grad_accum ", o.grad_accum,
               " = ", per_step, " (each rank's micro-batch is batch / (dp x ",
               o.ep > 1 ? "ep x " : "", "grad_accum)); change --batch to ",
               (o.batch / per_step + 1) * per_step, " or --grad_accum");
  }
  for (const auto& [flag, value] :
       {std::pair<const char*, const std::string&>{"--precision", o.precision},
        {"--grad_reduce_dtype", o.grad_reduce_dtype},
        {"--hsdp_reduce_dtype", o.hsdp_reduce_dtype}}) {
    if (value != "fp32" && value != "bf16" && value != "fp16") {
      return bad(flag, " must be fp32, bf16 or fp16, got '", value, "'");
    }
  }
  if (o.hsdp_shard < 0) return bad("--hsdp_shard must be >= 0 (0: no HSDP), got ", o.hsdp_shard);
  if (o.hsdp_shard > 0) {
    if (o.zero < 1) {
      return bad("--hsdp_shard shards the optimizer state within groups of ", o.hsdp_shard,
                 " ranks: it needs --zero 1, 2 or 3, got --zero ", o.zero);
    }
    if (o.dp % o.hsdp_shard != 0) {
      return bad("--hsdp_shard ", o.hsdp_shard, " must divide --dp ", o.dp,
                 " (groups of consecutive dp ranks, one replica per group)");
    }
  } else if (o.hsdp_reduce_dtype != "fp32") {
    return bad("--hsdp_reduce_dtype sets the dtype between HSDP groups; it needs --hsdp_shard");
  }
  if (o.autocast && o.precision != "bf16") {
    return bad("--autocast runs the forward GEMMs in bf16; it needs --precision bf16, got '",
               o.precision, "'");
  }
  if (o.inject_overflow_step < 0 || o.inject_overflow_count < 1) {
    return bad("--inject_overflow_step must be >= 0 and --inject_overflow_count >= 1");
  }
  if (o.nonfinite_skips < 0) return bad("--nonfinite_skips must be >= 0");
  if (o.keep_checkpoints < 0) return bad("--keep_checkpoints must be >= 0 (0: keep all)");
  return absl::OkStatus();
}

absl::StatusOr<data::TokenDataset> LoadDataset(const std::string& path, uint64_t seed,
                                               int64_t vocab_size) {
  if (path.empty()) return data::MakeSyntheticDataset(seed, kEmbeddedTokens);
  if (path == "random") {
    std::mt19937_64 gen(seed);
    std::uniform_int_distribution<int32_t> draw(0, static_cast<int32_t>(vocab_size) - 1);
    std::vector<int32_t> tokens(kEmbeddedTokens);
    for (int32_t& t : tokens) t = draw(gen);
    return data::TokenDataset(
        std::move(tokens), static_cast<int>(vocab_size), "random",
        absl::StrCat("random: ", kEmbeddedTokens, " uniform tokens, vocab ", vocab_size));
  }
  return data::LoadTokenFile(path);
}

Trainer::Trainer(const TrainOptions& options, std::unique_ptr<data::TokenDataset> dataset,
                 std::unique_ptr<GptModel> model, int64_t seq_len)
    : options_(options),
      dataset_(std::move(dataset)),
      model_(std::move(model)),
      seq_len_(seq_len),
      optimizer_(MakeOptimizer(options)),
      schedule_({.max_lr = options.lr,
                 .min_lr = options.min_lr < 0.0f ? options.lr / 10.0f : options.min_lr,
                 .warmup_steps = options.warmup_steps,
                 .total_steps = std::max<int64_t>(1, options.steps)}) {}

absl::StatusOr<std::unique_ptr<Trainer>> Trainer::Create(const TrainOptions& options,
                                                         comm::Communicator* dp_group) {
  return Create(options, parallel::ParallelContext{.world = dp_group, .dp = dp_group});
}

absl::StatusOr<std::unique_ptr<Trainer>> Trainer::Create(const TrainOptions& options,
                                                         parallel::ParallelContext context) {
  LOOM_RETURN_IF_ERROR(ValidateTrainOptions(options));
  comm::Communicator* dp_group = context.dp;
  for (const auto& [flag, want, group, what] :
       {std::tuple<const char*, int, comm::Communicator*, const char*>{"--dp", options.dp, dp_group,
                                                                       "data"},
        {"--tp", options.tp, context.tp, "tensor"},
        {"--pp", options.pp, context.pp, "pipeline"},
        {"--ep", options.ep, context.ep, "expert"}}) {
    const int size = group != nullptr ? group->size() : 1;
    if (size != want) {
      return absl::InvalidArgumentError(
          absl::StrCat(flag, " ", want, " but the ", what, "-parallel group has ", size, " ranks"));
    }
  }
  LOOM_ASSIGN_OR_RETURN(GptConfig config, ModelConfig(options));
  LOOM_ASSIGN_OR_RETURN(data::TokenDataset dataset,
                        LoadDataset(options.data, options.seed, config.vocab_size));
  if (dataset.vocab_size() > config.vocab_size) {
    return absl::InvalidArgumentError(
        absl::StrCat("the data (", dataset.name(), ") has vocabulary ", dataset.vocab_size(),
                     " but preset ", options.preset, " has ", config.vocab_size,
                     "; pass --vocab_size ", dataset.vocab_size(), " or larger"));
  }
  const int64_t seq_len = options.seq_len > 0 ? options.seq_len : config.context_length;
  if (seq_len > config.context_length) {
    return absl::InvalidArgumentError(absl::StrCat("--seq_len ", seq_len,
                                                   " exceeds the context length ",
                                                   config.context_length, " of ", options.preset));
  }
  LOOM_RETURN_IF_ERROR(config.Validate());
  LOOM_RETURN_IF_ERROR(config.ValidateTensorParallel(options.tp));
  LOOM_RETURN_IF_ERROR(
      config.ValidateExpertParallel(options.ep, options.moe_fold_tp ? options.tp : 1));
  // --moe_fold_tp: the MoE layers' expert group is the ep x tp ranks, those with this rank's dp
  // and pp coordinates, ep-major (collective over the world).
  std::unique_ptr<comm::Communicator> ep_tp;
  comm::Communicator* experts = context.ep;
  if (options.moe_fold_tp) {
    if (context.world == nullptr) {
      return absl::InvalidArgumentError("--moe_fold_tp needs the job's world communicator");
    }
    const int dp_rank = dp_group != nullptr ? dp_group->rank() : 0;
    LOOM_ASSIGN_OR_RETURN(
        ep_tp, context.world->Split(dp_rank * context.pp_size() + context.pp_rank(),
                                    context.ep_rank() * context.tp_size() + context.tp_rank()));
    config.moe.ep = ep_tp.get();
    config.moe.ep_axis = parallel::kEpTpAxis;
    experts = ep_tp.get();
  }
  // Hierarchical dispatch: the rail group (the ranks with this rank's index inside their group,
  // one per group) and this rank's group, split from the expert group (collective over it).
  std::unique_ptr<comm::Communicator> ep_rail, ep_host;
  if (options.moe_hier_dispatch) {
    const int per_group = experts->size() / static_cast<int>(config.moe.groups);
    const int r = experts->rank();
    LOOM_ASSIGN_OR_RETURN(ep_rail, experts->Split(r % per_group, r));
    LOOM_ASSIGN_OR_RETURN(ep_host, experts->Split(r / per_group, r));
    config.moe.ep_rail = ep_rail.get();
    config.moe.ep_host = ep_host.get();
  }
  auto model = std::make_unique<GptModel>(
      config,
      parallel::TensorParallelOptions{.group = context.tp,
                                      .sequence_parallel = options.sequence_parallel,
                                      .chunks = options.tp_chunks,
                                      .overlap = options.tp_overlap},
      context.ep);
  // Weights loaded from a file need the whole model; otherwise data parallelism fills only what
  // each rank holds from the initializers (a ZeRO-3 shard, never the whole model).
  const bool loads_weights = !options.init_from.empty() || options.resume;
  if (loads_weights) {
    model->Initialize(options.seed);
  } else {
    model->SetInitializers(options.seed);
  }
  model->SetRecompute(options.recompute);
  if (!options.init_from.empty()) {
    LOOM_RETURN_IF_ERROR(ImportGptWeights(*model, options.init_from));
  }
  auto owned = std::make_unique<data::TokenDataset>(std::move(dataset));
  std::unique_ptr<Trainer> t(new Trainer(options, std::move(owned), std::move(model), seq_len));
  t->ep_tp_ = std::move(ep_tp);
  t->ep_rail_ = std::move(ep_rail);
  t->ep_host_ = std::move(ep_host);
  LOOM_RETURN_IF_ERROR(t->schedule_.Validate());
  if (dp_group == nullptr) {
    t->own_group_ = std::move(comm::MakeLocalWorld(1)[0]);
    dp_group = t->own_group_.get();
  }
  t->dp_group_ = dp_group;
  context.dp = dp_group;
  if (context.world == nullptr) context.world = dp_group;
  t->context_ = context;
  // Data ranks: dp × ep, each its own slice of the batch.
  const int data_ranks = options.dp * options.ep;
  LOOM_ASSIGN_OR_RETURN(
      data::BatchSampler sampler,
      data::BatchSampler::Create(*t->dataset_, options.batch / data_ranks, seq_len,
                                 dp_group->rank() * options.ep + context.ep_rank(), data_ranks));
  t->sampler_ = std::make_unique<data::BatchSampler>(std::move(sampler));
  // Resume loads the full weights into the model; data parallelism then takes them over, and the
  // optimizer state is cut to this rank's shard.
  std::vector<io::NamedTensor> optimizer_state;
  if (options.resume) {
    LOOM_ASSIGN_OR_RETURN(optimizer_state, t->Resume());
  }
  const runtime::DType working = PrecisionDType(options.precision);
  comm::Communicator* shard_group = dp_group;
  if (options.hsdp_shard > 0) {  // groups of consecutive ranks shard; equal positions replicate
    const int rank = dp_group->rank(), k = options.hsdp_shard;
    LOOM_ASSIGN_OR_RETURN(t->shard_group_, dp_group->Split(rank / k, rank));
    LOOM_ASSIGN_OR_RETURN(t->replica_group_, dp_group->Split(rank % k, rank));
    shard_group = t->shard_group_.get();
  }
  if (options.pp > 1) LOOM_RETURN_IF_ERROR(t->CreatePipeline());
  parallel::Parameter* sparse_embedding = nullptr;
  if (options.sparse_embedding_grad) {
    sparse_embedding = t->model_->FindParameter("wte.weight");
    if (sparse_embedding == nullptr || options.pp > 1) {
      return absl::InvalidArgumentError(
          "--sparse_embedding_grad needs the tied token embedding and the LM head on each rank "
          "(not with --pp)");
    }
  }
  LOOM_ASSIGN_OR_RETURN(
      t->dp_,
      parallel::DataParallel::Create(
          t->stages_ != nullptr ? t->stages_->LocalParameterUnits() : t->model_->ParameterUnits(),
          *shard_group,
          {.zero_stage = options.zero,
           .bucket_bytes = options.bucket_bytes,
           .param_dtype = working,
           .reduce_dtype = PrecisionDType(options.grad_reduce_dtype),
           .overlap = options.overlap_grad_reduce,
           .overlap_param_gather = options.overlap_param_gather,
           .allocator = options.device,
           .replicas = t->replica_group_.get(),
           .replica_reduce_dtype = PrecisionDType(options.hsdp_reduce_dtype),
           .tp = context.tp,
           .pp = context.pp,
           .ep = context.ep,
           .ep_tp = t->ep_tp_.get(),
           .embedding = t->embedding_group_.get(),
           .sparse_embedding = sparse_embedding}));
  t->model_->SetParameterUseHooks(t->dp_.get());
  t->model_->SetActivationDType(working);
  if (options.resume) {
    LOOM_ASSIGN_OR_RETURN(std::vector<io::NamedTensor> mine,
                          t->ShardOptimizerState(optimizer_state));
    if (options.device != nullptr) {
      for (io::NamedTensor& state : mine) state.tensor = state.tensor.Clone(options.device);
    }
    LOOM_RETURN_IF_ERROR(t->optimizer_->LoadState(mine, t->resumed_step_));
  }
  return t;
}

std::vector<comm::Communicator*> Trainer::DataGroups() const {
  std::vector<comm::Communicator*> groups = {dp_group_};
  if (context_.ep != nullptr) groups.push_back(context_.ep);
  return groups;
}

absl::StatusOr<Trainer::RankMean> Trainer::MeanOverRanks(float local, bool flag) {
  Tensor value =
      Tensor::FromVector<float>({2}, {local, flag ? 1.0f : 0.0f}, runtime::MemoryTag::kComm);
  for (comm::Communicator* group : DataGroups()) {
    if (group->size() == 1) continue;
    LOOM_RETURN_IF_ERROR(group->AllReduce(value, value, comm::ReduceOp::kAvg)->Wait());
  }
  return RankMean{value.data<float>()[0], value.data<float>()[1] > 0.0f};
}

absl::StatusOr<StepMetrics> Trainer::SkipStep(StepMetrics& m,
                                              std::chrono::steady_clock::time_point start) {
  m.skipped = true;
  LOOM_RETURN_IF_ERROR(FinishMoeStep(m));
  m.step = optimizer_->step();
  FinishMetrics(m, start);
  return m;
}

absl::StatusOr<StepMetrics> Trainer::SkipNonFiniteStep(
    StepMetrics& m, std::chrono::steady_clock::time_point start) {
  const int64_t step = optimizer_->step() + 1;
  if (++nonfinite_in_a_row_ <= options_.nonfinite_skips) {
    if (context_.world->rank() == 0) {
      LOOM_LOG(WARNING) << "step " << step << ": non-finite loss or gradients, step skipped ("
                        << nonfinite_in_a_row_ << " in a row of at most "
                        << options_.nonfinite_skips << ", --nonfinite_skips)";
    }
    return SkipStep(m, start);
  }
  LOOM_ASSIGN_OR_RETURN(const std::string first, dp_->FirstNonFiniteGradient());
  return absl::InternalError(absl::StrCat(
      "step ", step, ": non-finite loss or gradients ", nonfinite_in_a_row_,
      " times in a row (--nonfinite_skips ", options_.nonfinite_skips, "); ",
      first.empty() ? "every gradient is finite, the loss is not"
                    : absl::StrCat("first parameter with a non-finite gradient: ", first),
      ". Lower --lr, check the data, or resume from the last checkpoint"));
}

absl::StatusOr<StepMetrics> Trainer::Step() {
  const auto start = std::chrono::steady_clock::now();
  data::Batch batch = sampler_->Next();
  CopyTo(options_.device, batch);
  dp_->ZeroGrad();
  model_->ResetTpStats();
  model_->ResetMoeExchangeWait();
  StepMetrics m;
  // f16 scales the loss (and so every gradient) by the loss scale; bf16 and f32 need no scaling.
  const bool scaled = options_.precision == "fp16";
  m.loss_scale = scaled ? scaler_.scale() : 1.0f;
  LOOM_ASSIGN_OR_RETURN(const float loss, RunMicroBatches(batch, m.loss_scale));
  optimizer_event_.start_us = runtime::SteadyMicros();
  LOOM_RETURN_IF_ERROR(dp_->FinishBackward());
  m.exposed_reduce_ms = dp_->exposed_reduce_ms();
  m.exposed_gather_ms = dp_->exposed_gather_ms();
  m.exposed_tp_ms = model_->tp_wait_ms();
  m.exposed_a2a_ms = model_->moe_exchange_wait_ms();
  m.lr = schedule_.At(optimizer_->step());
  InjectOverflowForTesting();
  if (scaled) {
    LOOM_ASSIGN_OR_RETURN(const RankMean mean, MeanOverRanks(loss, false));
    m.loss = mean.value;
    LOOM_ASSIGN_OR_RETURN(const bool finite, dp_->GradientsFinite());
    if (!scaler_.Update(finite)) {  // every rank takes the same decision
      m.grad_norm = std::numeric_limits<double>::infinity();
      return SkipStep(m, start);
    }
    dp_->ScaleGradients(1.0f / m.loss_scale);
    if (!std::isfinite(m.loss)) {  // before the update, so the weights stay as they were
      return absl::InternalError(absl::StrCat("loss is ", m.loss, " at step ",
                                              optimizer_->step() + 1,
                                              "; lower --lr or check the data"));
    }
    LOOM_ASSIGN_OR_RETURN(m.grad_norm, dp_->ClipGradNorm(options_.grad_clip));
  } else {
    // A non-finite norm leaves the gradients as they are; whether any rank saw one travels with
    // the loss, so every rank takes the same decision.
    LOOM_ASSIGN_OR_RETURN(m.grad_norm, dp_->ClipGradNorm(options_.grad_clip));
    LOOM_ASSIGN_OR_RETURN(const RankMean mean, MeanOverRanks(loss, !std::isfinite(m.grad_norm)));
    m.loss = mean.value;
    if (mean.any || !std::isfinite(m.loss)) return SkipNonFiniteStep(m, start);
  }
  nonfinite_in_a_row_ = 0;
  optimizer_->Step(dp_->Slots(), m.lr);
  LOOM_RETURN_IF_ERROR(dp_->FinishOptimizerStep());
  LOOM_RETURN_IF_ERROR(FinishMoeStep(m));
  m.step = optimizer_->step();
  FinishMetrics(m, start);
  return m;
}

absl::Status Trainer::FinishMoeStep(StepMetrics& m) {
  // Tensor parallelism: the tp ranks routed other tokens too (each its share of the micro-batch,
  // with sequence parallelism or without: MoeOptions::tp).
  std::vector<comm::Communicator*> routed = DataGroups();
  if (context_.tp != nullptr) routed.push_back(context_.tp);
  LOOM_ASSIGN_OR_RETURN(m.expert_load, model_->FinishMoeStep(routed, !m.skipped));
  for (std::vector<int64_t>& load : m.expert_load) {
    m.dropped_tokens += load.back();  // TakeLoad's last entry: the dropped slots
    load.pop_back();
  }
  return absl::OkStatus();
}

absl::StatusOr<float> Trainer::RunMicroBatches(const data::Batch& batch, float loss_scale) {
  // Expert parallelism: the ep ranks' replicated gradients are summed (partial over "ep"), so
  // each rank's loss enters with 1/ep, making the sum the mean over their tokens.
  loss_scale /= static_cast<float>(options_.ep);
  parallel::Stash settings;
  settings.SetActivationDType(PrecisionDType(options_.precision));
  settings.SetAutocast(options_.autocast);
  if (pipeline_ != nullptr) {
    dp_->BeginPipelineStep(pipeline_->micro_batches);
    stages_->BeginStep(batch, pipeline_->micro_batches, loss_scale, settings);
    {
      const OnDevice activations(options_.device);
      LOOM_RETURN_IF_ERROR(executor_->RunStep());
    }
    // The last stage's loss, on every stage's rank.
    Tensor loss = Tensor::FromVector<float>({1}, {stages_->MeanLoss()}, runtime::MemoryTag::kComm);
    LOOM_RETURN_IF_ERROR(context_.pp->AllReduce(loss, loss, comm::ReduceOp::kSum)->Wait());
    return loss.data<float>()[0];
  }
  // Micro-batches in turn; with --moe_dual_batch each as two halves of its sequences, one lane
  // each, taking turns at the MoE exchanges.
  const int64_t accum = options_.grad_accum, halves = options_.moe_dual_batch ? 2 : 1;
  const int64_t part = batch.inputs.dim(0) / (accum * halves);
  const float part_scale = loss_scale / static_cast<float>(accum * halves);
  float loss = 0.0f;
  std::vector<float> part_loss(halves);
  // Each part's F and B, in slots of their own (lanes may run at once).
  compute_events_.assign(2 * accum * halves, {});
  for (int64_t i = 0; i < accum; ++i) {
    dp_->BeginMicroBatch(/*last=*/i + 1 == accum, static_cast<int>(halves));
    std::vector<std::function<void()>> lanes;
    for (int64_t h = 0; h < halves; ++h) {
      lanes.push_back([&, h, k = i * halves + h] {
        const OnDevice activations(options_.device);  // lanes may run on helper threads
        parallel::Stash stash = settings.EmptyLike();
        const int64_t lo = k * part, forward = runtime::SteadyMicros();
        part_loss[h] = model_->ForwardLoss(stash, batch.inputs.Slice(lo, lo + part),
                                           batch.targets.Slice(lo, lo + part));
        const int64_t backward = runtime::SteadyMicros();
        model_->Backward(stash, part_scale);
        compute_events_[2 * k] =
            ComputeEvent(parallel::pipeline::OpKind::kForward, k, forward, backward);
        compute_events_[2 * k + 1] = ComputeEvent(parallel::pipeline::OpKind::kBackwardInput, k,
                                                  backward, runtime::SteadyMicros());
      });
    }
    lanes_.Run(lanes, /*interleave=*/true);
    for (float l : part_loss) loss += l;
  }
  return loss / static_cast<float>(accum * halves);
}

absl::Status Trainer::CreatePipeline() {
  LOOM_ASSIGN_OR_RETURN(parallel::pipeline::Schedule schedule,
                        parallel::pipeline::MakeSchedule(
                            options_.schedule, {.ranks = options_.pp,
                                                .micro_batches = PipelineMicroBatches(options_),
                                                .virtual_stages = options_.virtual_stages}));
  pipeline_ = std::make_unique<parallel::pipeline::Schedule>(std::move(schedule));
  const parallel::pipeline::Placement& placement = pipeline_->placement;
  comm::Communicator& pp = *context_.pp;
  LOOM_ASSIGN_OR_RETURN(channels_, parallel::pipeline::Channels::Create(pp, placement));
  // The tied embedding's two copies, when the first and the last stage are on different ranks.
  const int first = placement.rank_of(0), last = placement.rank_of(placement.stages() - 1);
  if (first != last) {
    const bool member = pp.rank() == first || pp.rank() == last;
    LOOM_ASSIGN_OR_RETURN(std::unique_ptr<comm::Communicator> group,
                          pp.Split(member ? 0 : 1 + pp.rank(), pp.rank() == first ? 0 : 1));
    if (member) embedding_group_ = std::move(group);
  }
  stages_ = std::make_unique<GptStages>(*model_, placement, pp.rank(), embedding_group_.get());
  executor_ = std::make_unique<parallel::pipeline::Executor>(
      *pipeline_, pp.rank(), *channels_, *stages_,
      parallel::pipeline::ExecutorOptions{.overlap_pairs = options_.moe_dual_batch});
  return absl::OkStatus();
}

void Trainer::InjectOverflowForTesting() {
  // One rank only (data-parallel rank 0), so the check must travel to the others. A skipped step
  // is retried under the same number: the first `inject_overflow_count` tries get the Inf.
  if (options_.inject_overflow_step != optimizer_->step() + 1 || dp_group_->rank() != 0 ||
      injected_ >= options_.inject_overflow_count || dp_->Slots().empty()) {
    return;
  }
  ++injected_;
  const Tensor& grad = dp_->Slots().front().grad;  // host or device
  grad.Reshape({grad.numel()}).Slice(0, 1).Fill(std::numeric_limits<float>::infinity());
}

std::vector<parallel::pipeline::TraceEvent> Trainer::step_trace() const {
  std::vector<parallel::pipeline::TraceEvent> trace =
      executor_ != nullptr ? executor_->trace() : compute_events_;
  trace.push_back(optimizer_event_);
  for (const parallel::DataParallel::CommSpan& s : dp_->comm_spans()) {
    if (s.end_us == 0) continue;  // never waited for
    trace.push_back({.instr = {},
                     .start_us = s.start_us,
                     .end_us = s.end_us,
                     .dp_bucket = s.bucket,
                     .dp_gather = s.gather});
  }
  return trace;
}

void Trainer::FinishMetrics(StepMetrics& m, std::chrono::steady_clock::time_point start) {
  optimizer_event_.end_us = runtime::SteadyMicros();
  m.step_ms =
      std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count();
  m.tokens_per_s = static_cast<double>(tokens_per_step()) / (m.step_ms / 1000.0);
  m.gflops = m.tokens_per_s * model_->TrainingFlopsPerToken(seq_len_) / 1e9;
}

std::string Trainer::StateJson() const {
  nlohmann::json j = {
      {"format", "loom-train-state"},
      {"version", 1},
      {"step", optimizer_->step()},
      {"data_position", sampler_->position()},
      {"rng", {{"seed", options_.seed}, {"kind", "philox4x32-10, counter-based"}}},
      {"lr_schedule", ScheduleJson(schedule_.options())},
      {"loss_scale", {{"scale", scaler_.scale()}, {"clean_steps", scaler_.clean_steps()}}},
      {"run", RunIdentity(options_, model_->config(), seq_len_)}};
  return j.dump(2);
}

absl::Status Trainer::SaveCheckpoint() {
  if (options_.save_dir.empty()) {
    return absl::FailedPreconditionError("no --save_dir given: nowhere to save the checkpoint");
  }
  // The same files whatever the layout: whole f32 master weights and whole optimizer state.
  return WriteWhole(/*optimizer_state=*/true, [&](const auto& weights, const auto& state) {
    return WriteCheckpoint(weights, state);
  });
}

absl::Status Trainer::WriteWhole(bool optimizer_state, const WholeWriter& write) {
  // The gathers are collective and fail alike on every rank.
  LOOM_RETURN_IF_ERROR(dp_->GatherParameters());
  absl::StatusOr<std::vector<io::NamedTensor>> weights = WholeWeights();
  absl::StatusOr<std::vector<io::NamedTensor>> state = std::vector<io::NamedTensor>{};
  if (weights.ok() && optimizer_state) state = GatherOptimizerState();
  absl::Status written = weights.ok() ? state.status() : weights.status();
  const bool writer = dp_group_->rank() == 0 && context_.tp_rank() == 0 &&
                      context_.pp_rank() == 0 && context_.ep_rank() == 0;
  LOOM_CHECK_EQ(writer, context_.world->rank() == 0) << "the writer must be world rank 0";
  if (written.ok() && writer) written = write(*weights, *state);
  dp_->ReleaseParameters();  // the gathered weights are not kept (ZeRO-3: 4Ψ per rank)
  // Every rank joins, whatever happened on the writer (world rank 0: every mesh coordinate 0), so
  // no rank reads or reports a file still being written, none waits for a rank that gave up, and
  // all of them see the writer's error (a full disk) and decide alike what to do next.
  return parallel::ShareStatus(*context_.world, written, /*root=*/0);
}

absl::StatusOr<std::vector<io::NamedTensor>> Trainer::WholeWeights() {
  LOOM_ASSIGN_OR_RETURN(std::vector<io::NamedTensor> weights, GptParameterTensors(*model_));
  CopyToHost(weights);
  if (context_.pp == nullptr) return weights;
  LOOM_ASSIGN_OR_RETURN(
      weights, UnionOnRankZero(std::move(weights), *context_.pp, runtime::MemoryTag::kParam));
  // In the model's order, as one rank writes them.
  absl::flat_hash_map<std::string, int> order;
  for (parallel::Parameter* p : model_->Parameters()) order.emplace(p->name(), order.size());
  std::stable_sort(weights.begin(), weights.end(),
                   [&](const auto& a, const auto& b) { return order[a.name] < order[b.name]; });
  return weights;
}

absl::Status Trainer::ExportWeights(const std::string& path) {
  return WriteWhole(/*optimizer_state=*/false, [&](const auto& weights, const auto&) {
    return WriteGptWeights(model_->config(), weights, path);
  });
}

absl::StatusOr<std::vector<io::NamedTensor>> Trainer::GatherOptimizerState() {
  LOOM_ASSIGN_OR_RETURN(
      std::vector<io::NamedTensor> state,
      dp_->GatherOptimizerState(optimizer_->State(), optimizer_->StateSuffixes()));
  CopyToHost(state);
  // Each tensor is the flat state of this rank's shard of a parameter: gathered whole, flat.
  for (io::NamedTensor& t : state) {
    const parallel::Parameter* p = StateOwner(t.name);
    if (p == nullptr || !p->shard_spec().is_split()) continue;
    LOOM_ASSIGN_OR_RETURN(
        Tensor whole,
        parallel::GatherShards(t.tensor.Reshape(p->local_shape()), p->global_shape(),
                               p->shard_spec(), *model_->AxisGroup(p->shard_spec().axis)));
    t.tensor = whole.Reshape({whole.numel()});
  }
  if (context_.pp == nullptr) return state;
  return UnionOnRankZero(std::move(state), *context_.pp, runtime::MemoryTag::kOptimizer);
}

absl::StatusOr<std::vector<io::NamedTensor>> Trainer::ShardOptimizerState(
    const std::vector<io::NamedTensor>& whole) const {
  std::vector<io::NamedTensor> local;
  for (const io::NamedTensor& t : whole) {  // a pipeline rank: its stages' parameters'
    const parallel::Parameter* p = StateOwner(t.name);
    if (stages_ == nullptr || p == nullptr || stages_->holds(*p)) local.push_back(t);
  }
  for (io::NamedTensor& t : local) {
    const parallel::Parameter* p = StateOwner(t.name);
    if (p == nullptr || !p->shard_spec().is_split()) continue;
    if (t.tensor.numel() != runtime::NumElements(p->global_shape())) {
      return absl::InvalidArgumentError(absl::StrCat(
          "optimizer state '", t.name, "' has ", t.tensor.numel(), " elements, not the ",
          runtime::NumElements(p->global_shape()), " of ", p->name()));
    }
    Tensor mine =
        Tensor::Empty(p->local_shape(), runtime::DType::kF32, runtime::MemoryTag::kOptimizer);
    parallel::ExtractShard(t.tensor.Reshape(p->global_shape()), p->shard_spec(), mine);
    t.tensor = mine.Reshape({mine.numel()});
  }
  return dp_->ShardOptimizerState(local, optimizer_->StateSuffixes());
}

const parallel::Parameter* Trainer::StateOwner(const std::string& state_name) const {
  for (const std::string& suffix : optimizer_->StateSuffixes()) {
    if (!absl::EndsWith(state_name, suffix)) continue;
    const parallel::Parameter* p = model_->FindParameter(
        absl::string_view(state_name).substr(0, state_name.size() - suffix.size()));
    if (p != nullptr) return p;
  }
  return nullptr;
}

absl::Status Trainer::WriteCheckpoint(const std::vector<io::NamedTensor>& weights_whole,
                                      const std::vector<io::NamedTensor>& optimizer_state) {
  LOOM_ASSIGN_OR_RETURN(std::string weights, io::SerializeSafetensors(weights_whole));
  LOOM_ASSIGN_OR_RETURN(std::string optimizer, io::SerializeSafetensors(optimizer_state));
  LOOM_RETURN_IF_ERROR(io::SaveCheckpoint(options_.save_dir, optimizer_->step(),
                                          {{kModelFile, std::move(weights)},
                                           {kOptimizerFile, std::move(optimizer)},
                                           {kStateFile, StateJson()}}));
  if (options_.keep_checkpoints == 0) return absl::OkStatus();
  return io::PruneCheckpoints(options_.save_dir, options_.keep_checkpoints).status();
}

namespace {

// What Resume reads from trainer.json, every field type-checked (a damaged or hand-edited file is
// an error naming the field, never an exception).
struct SavedState {
  nlohmann::json run;                                   // an object: the run's identity
  nlohmann::json schedule = nlohmann::json::object();   // an object: the LR schedule's fields
  int64_t data_position = -1;                           // -1: absent (SetPosition refuses it)
  std::optional<std::pair<float, int64_t>> loss_scale;  // scale, clean steps
};

absl::StatusOr<SavedState> ParseSavedState(const std::string& text, const std::string& path) {
  const nlohmann::json state = nlohmann::json::parse(text, nullptr, false);
  if (state.is_discarded() || !state.is_object() || !state.contains("run") ||
      !state["run"].is_object()) {
    return absl::DataLossError(absl::StrCat(path, ": not a loom train state"));
  }
  auto bad = [&](const char* field) {
    return absl::DataLossError(absl::StrCat(path, ": field \"", field, "\" has the wrong type"));
  };
  SavedState saved;
  saved.run = state["run"];
  if (state.contains("lr_schedule")) {
    if (!state["lr_schedule"].is_object()) return bad("lr_schedule");
    saved.schedule = state["lr_schedule"];
  }
  if (state.contains("data_position")) {
    if (!state["data_position"].is_number_integer()) return bad("data_position");
    saved.data_position = state["data_position"].get<int64_t>();
  }
  if (state.contains("loss_scale")) {
    const nlohmann::json& ls = state["loss_scale"];
    if (!ls.is_object() || !ls.contains("scale") || !ls["scale"].is_number() ||
        !ls.contains("clean_steps") || !ls["clean_steps"].is_number_integer() ||
        !(ls["scale"].get<double>() > 0.0 && ls["scale"].get<double>() < 3.4e38) ||
        ls["clean_steps"].get<int64_t>() < 0) {
      return bad("loss_scale");
    }
    saved.loss_scale = {ls["scale"].get<float>(), ls["clean_steps"].get<int64_t>()};
  }
  return saved;
}

}  // namespace

absl::StatusOr<std::vector<io::NamedTensor>> Trainer::Resume() {
  LOOM_ASSIGN_OR_RETURN(std::string dir, io::FindLatestCheckpoint(options_.save_dir));
  LOOM_ASSIGN_OR_RETURN(io::LoadedCheckpoint ckpt, io::LoadCheckpoint(dir));
  for (const char* name : {kModelFile, kOptimizerFile, kStateFile}) {
    if (!ckpt.files.contains(name)) {
      return absl::DataLossError(absl::StrCat(dir, ": checkpoint has no ", name));
    }
  }
  LOOM_ASSIGN_OR_RETURN(
      const SavedState state,
      ParseSavedState(ckpt.files[kStateFile], absl::StrCat(dir, "/", kStateFile)));
  const nlohmann::json expected = RunIdentity(options_, model_->config(), seq_len_);
  for (const auto& [field, value] : expected.items()) {
    if (state.run.value(field, nlohmann::json()) != value) {
      return absl::FailedPreconditionError(absl::StrCat(
          dir, " was written with ", field, "=", state.run.value(field, nlohmann::json()).dump(),
          " but this run has ", field, "=", value.dump(), "; resume with the same setting"));
    }
  }
  // The schedule must continue as it was planned (a different --steps, --lr, ... would bend it).
  const nlohmann::json& saved_schedule = state.schedule;
  const nlohmann::json schedule = ScheduleJson(schedule_.options());
  for (const auto& [field, value] : schedule.items()) {
    if (saved_schedule.contains(field) && saved_schedule[field] != value) {
      return absl::FailedPreconditionError(absl::StrCat(
          dir, " was written with the learning-rate schedule's ", field, "=",
          saved_schedule[field].dump(), " but this run has ", value.dump(),
          " (from --steps, --lr, --min_lr, --warmup_steps); resume with the same settings"));
    }
  }
  LOOM_ASSIGN_OR_RETURN(io::SafetensorsFile weights,
                        io::ParseSafetensors(ckpt.files[kModelFile], dir + "/" + kModelFile));
  LOOM_RETURN_IF_ERROR(LoadGptWeights(*model_, weights, dir + "/" + kModelFile));
  LOOM_ASSIGN_OR_RETURN(io::SafetensorsFile opt,
                        io::ParseSafetensors(ckpt.files[kOptimizerFile], dir + "/" + kOptimizerFile,
                                             runtime::MemoryTag::kOptimizer));
  if (const absl::Status position = sampler_->SetPosition(state.data_position); !position.ok()) {
    return absl::Status(position.code(),
                        absl::StrCat(dir, "/", kStateFile, ": ", position.message()));
  }
  if (state.loss_scale.has_value()) {
    scaler_.Restore(state.loss_scale->first, state.loss_scale->second);
  }
  resumed_from_ = dir;
  resumed_step_ = ckpt.step;
  return std::move(opt.tensors);
}

absl::StatusOr<double> Trainer::Evaluate(const data::TokenDataset& dataset, int64_t batches) {
  if (batches < 1) {
    return absl::InvalidArgumentError(absl::StrCat("--eval_batches must be >= 1, got ", batches));
  }
  if (pipeline_ != nullptr) {
    return absl::UnimplementedError("evaluation of a pipeline-parallel model is not supported yet");
  }
  double total = 0.0;
  for (int64_t i = 0; i < batches; ++i) {
    LOOM_ASSIGN_OR_RETURN(data::Batch b, data::EvalBatch(dataset, options_.batch, seq_len_, i));
    CopyTo(options_.device, b);
    const OnDevice activations(options_.device);
    parallel::Stash stash;
    total += model_->ForwardLoss(stash, b.inputs, b.targets);
  }
  return total / static_cast<double>(batches);
}

}  // namespace loom::models
