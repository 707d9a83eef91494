// train_gpt: trains (or evaluates) a GPT, on one rank or data-parallel under mpirun. See
// docs/train_gpt.md.
//
//   build/examples/train_gpt --preset tiny --steps 300 --metrics_out /tmp/m.jsonl
//   mpirun -np 2 build/examples/train_gpt --preset tiny --zero 1 --steps 300
//   build/examples/train_gpt --preset cpu-small --data shard.bin --steps 2000 --save_dir /tmp/ckpt
//       --resume
//   build/examples/train_gpt --eval --init_from model.safetensors --data val.bin --eval_batches 8
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <memory>
#include <nlohmann/json.hpp>
#include <numeric>
#include <string>
#include <thread>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/reflection.h"
#include "absl/flags/usage.h"
#include "absl/status/status.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "comm/local/local_backend.h"
#include "comm/world.h"
#include "models/gpt_weights.h"
#include "models/trainer.h"
#include "parallel/config_agreement.h"
#include "parallel/mesh.h"
#include "parallel/pipeline/trace.h"
#include "parallel/stash.h"
#include "runtime/allocator.h"
#include "runtime/base/logging.h"
#include "runtime/base/status_macros.h"
#include "runtime/base/stop_signal.h"
#include "runtime/device_open.h"
#include "runtime/io/checkpoint.h"
#include "runtime/kernels/cuda_twins.h"
#include "runtime/kernels/matmul.h"
#include "runtime/parallel.h"

ABSL_FLAG(std::string, preset, "tiny",
          "model preset: tiny, cpu-small, gpt2-124m, or the mixtures of experts tiny-moe and "
          "moe-small (docs/expert_parallel.md)");
ABSL_FLAG(std::string, data, "",
          "token file: an llm.c shard (magic 20240520) or any other file as byte tokens; empty: "
          "the embedded synthetic sorting task; random: uniform random tokens of the model's "
          "vocabulary (benchmarks)");
ABSL_FLAG(int64_t, steps, 100, "optimizer steps to run (total, counting resumed ones)");
ABSL_FLAG(int64_t, batch, 8, "sequences per optimizer step (B), over all data-parallel ranks");
ABSL_FLAG(int32_t, dp, 0, "data-parallel ranks; 0: the job's ranks / tp (mpirun -np)");
ABSL_FLAG(int32_t, tp, 1, "tensor-parallel ranks (heads, MLP hidden units and vocabulary split)");
ABSL_FLAG(bool, sequence_parallel, false,
          "with --tp: shard norms, residuals and position embeddings along the tokens (all-gather "
          "before and reduce-scatter after each tensor-parallel region instead of all-reduce)");
ABSL_FLAG(int32_t, tp_chunks, 4,
          "with --tp: token-row chunks each GEMM next to a tp collective is cut into (1: none)");
ABSL_FLAG(
    bool, tp_overlap, true,
    "with --tp_chunks > 1: pipeline the chunks with the tp collectives (false: wait for each, "
    "the same arithmetic; the baseline for exposed_tp_ms)");
ABSL_FLAG(int32_t, pp, 1, "pipeline ranks (docs/pipeline_parallel.md)");
ABSL_FLAG(std::string, schedule, "1f1b",
          "with --pp: gpipe, 1f1b, interleaved, zb-h1, zb-v or dualpipe-v");
ABSL_FLAG(int32_t, micro_batches, 0, "with --pp: micro-batches per step (0: --pp)");
ABSL_FLAG(int32_t, ep, 1,
          "expert-parallel ranks (a MoE preset): the experts split over them, each its own slice "
          "of the batch (docs/expert_parallel.md)");
ABSL_FLAG(double, moe_capacity_factor, -1,
          "MoE: each expert keeps ceil(factor x tokens x top-k / experts) slots of a rank's "
          "micro-batch and drops the rest (0: dropless; negative: the preset's, dropless)");
ABSL_FLAG(double, moe_aux_loss_coef, -1,
          "MoE: coefficient of the sequence-level balance loss (0: none; negative: the preset's)");
ABSL_FLAG(double, moe_bias_rate, -1,
          "MoE: update rate of the auxiliary-loss-free balancing bias (0: fixed at 0; negative: "
          "the preset's, 1e-3)");
ABSL_FLAG(int32_t, moe_groups, 0,
          "MoE node-limited routing: expert groups (one per host; must divide --ep when ep > 1); "
          "0: the preset's (1, no limit)");
ABSL_FLAG(int32_t, moe_chunks, 2,
          "with --ep: token chunks per MoE layer; one chunk's all-to-all overlaps another's "
          "experts");
ABSL_FLAG(bool, moe_overlap, true,
          "with --ep: overlap the chunks' all-to-alls with expert compute (false: wait for each, "
          "the same arithmetic; the baseline for exposed_a2a_ms)");
ABSL_FLAG(bool, moe_dual_batch, false,
          "MoE: run each micro-batch as two halves that take turns, one half's all-to-all "
          "overlapping the other's compute (DeepSeek's dual micro-batch overlap; with "
          "--moe_overlap=false each exchange is waited for before the turn passes: the same "
          "arithmetic, the baseline); with --pp, --schedule dualpipe-v's paired forward and "
          "backward take turns instead");
ABSL_FLAG(bool, moe_hier_dispatch, false,
          "MoE with --ep (or --moe_fold_tp) and --moe_groups > 1 (one group per host): send a "
          "token once to each "
          "group holding one of its experts and forward it inside the group (DeepEP's two hops); "
          "each group's partial output comes back once");
ABSL_FLAG(bool, moe_fold_tp, false,
          "MoE with --tp > 1: split the experts over the ep x tp ranks (each holds "
          "experts / (ep x tp) and routes its share of the tokens) instead of over ep alone "
          "(Megatron-Core's MoE parallel folding): less expert memory per rank");
ABSL_FLAG(std::string, moe_dispatch, "fp32",
          "with --ep: dtype of the forward dispatch: fp32, bf16 or fp8 (e4m3, one f32 scale per "
          "128 elements, as DeepSeek-V3)");
ABSL_FLAG(std::string, moe_combine, "fp32",
          "with --ep: dtype of the combine and the backward exchanges: fp32 or bf16");
ABSL_FLAG(std::string, attention, "probs",
          "attention kernel: probs (keeps each layer's T x T probabilities for the backward) or "
          "flash (keeps each row's log-sum-exp and recomputes them: memory linear in T)");
ABSL_FLAG(int32_t, moe_top_groups, 0,
          "MoE node-limited routing: groups a token's experts may come from (0: the preset's)");
ABSL_FLAG(int32_t, virtual_stages, 2, "--schedule interleaved: chunks per rank");
ABSL_FLAG(std::string, trace, "",
          "write the last step's timeline of every rank to this Chrome trace JSON (Perfetto, "
          "chrome://tracing): forward, backward (or the pipeline's ops), the optimizer step, and "
          "the data-parallel reductions and parameter all-gathers");
ABSL_FLAG(std::string, order, "tp-ep-dp-pp",
          "mesh order, fastest-varying axis first (tp-ep-dp-pp: tp groups are neighbouring ranks)");
ABSL_FLAG(int32_t, zero, 0,
          "ZeRO stage: 0 DDP, 1 sharded optimizer state, 2 + sharded gradients, 3 + sharded "
          "parameters");
ABSL_FLAG(int64_t, grad_accum, 1, "micro-batches per step (gradients reduce on the last)");
ABSL_FLAG(double, bucket_mb, 1.0,
          "gradient bucket size in MiB (small buckets shorten the reduction left after backward "
          "and the first block's wait for its parameters: docs/data_parallel.md)");
ABSL_FLAG(bool, overlap_grad_reduce, true,
          "start each bucket's reduction during backward; false: after it (to measure overlap)");
ABSL_FLAG(bool, overlap_param_gather, true,
          "ZeRO-1/2: all-gather the updated parameters while the next forward runs (each layer "
          "waits for its own); false: at the end of the step (to measure overlap)");
ABSL_FLAG(bool, sparse_embedding_grad, false,
          "data parallelism: reduce the tied token embedding's LM-head gradient with its bucket as "
          "soon as the head's backward is done, and all-gather its lookup gradient after backward "
          "as (token ids, rows) instead of reducing the whole table at the end (for slow links; "
          "not with --pp or --ep)");
ABSL_FLAG(std::string, comm, "shm",
          "collectives between ranks: shm (loom's shared-memory algorithms, one host), mpi "
          "(MPI's own), ring (loom's ring algorithms over MPI point-to-point), hier (ring "
          "composed per host) or nccl (NCCL on device tensors: --device cuda, one GPU per rank); "
          "with --device cuda the host backends stage device tensors through host memory");
ABSL_FLAG(std::string, precision, "fp32",
          "working parameters and activations: fp32, bf16 or fp16 (f32 master weights; fp16 with "
          "dynamic loss scaling)");
ABSL_FLAG(std::string, grad_reduce_dtype, "fp32",
          "dtype of gradients on the wire: fp32, bf16 or fp16 (added in f32 either way)");
ABSL_FLAG(bool, autocast, false,
          "with --precision bf16: the forward GEMMs take bf16 activations too, as PyTorch's CPU "
          "autocast (faster where the CPU has bf16 units; further from the fp32 loss curve)");
ABSL_FLAG(int32_t, hsdp_shard, 0,
          "HSDP: ZeRO (--zero 1-3) shards within groups of this many consecutive ranks (e.g. the "
          "ranks of a host) and replicates across the groups; 0: shard over all ranks");
ABSL_FLAG(std::string, hsdp_reduce_dtype, "fp32",
          "HSDP: dtype of the gradients between the groups (fp32, bf16, fp16; added in f32)");
ABSL_FLAG(int32_t, nonfinite_skips, 3,
          "fp32/bf16: steps with a non-finite loss or gradient skipped in a row (no update) before "
          "the run stops with an error naming the first such parameter (docs/faults.md)");
ABSL_FLAG(int32_t, keep_checkpoints, 3,
          "committed checkpoints kept in --save_dir, the newest; older ones are removed after each "
          "save (0: keep all)");
ABSL_FLAG(int64_t, inject_overflow_step, 0,
          "fault injection for tests: an Inf gradient on rank 0 at this step (fp16: an overflow; "
          "fp32/bf16: a non-finite step)");
ABSL_FLAG(int32_t, inject_overflow_count, 1,
          "fault injection for tests: --inject_overflow_step's first N tries of that step get it");
ABSL_FLAG(int32_t, inject_straggler_ms, 0,
          "fault injection for tests: rank --inject_straggler_rank sleeps this long in every step");
ABSL_FLAG(int32_t, inject_straggler_rank, 0, "see --inject_straggler_ms");
ABSL_FLAG(int64_t, seq_len, 0, "tokens per sequence (T); 0: the preset's context length");
ABSL_FLAG(int64_t, vocab_size, 0, "override the preset's vocabulary size (0: keep it)");
ABSL_FLAG(int64_t, num_layers, 0, "override the preset's number of blocks (0: keep it)");
ABSL_FLAG(std::string, optimizer, "adamw", "adamw or sgd (with --momentum)");
ABSL_FLAG(double, lr, 1e-3, "peak learning rate");
ABSL_FLAG(double, min_lr, -1.0, "cosine floor; negative: lr / 10");
ABSL_FLAG(int64_t, warmup_steps, 0, "linear warmup steps");
ABSL_FLAG(double, weight_decay, 0.1, "decoupled weight decay on matrices and embeddings");
ABSL_FLAG(double, momentum, 0.9, "SGD momentum");
ABSL_FLAG(double, grad_clip, 1.0, "global gradient-norm clip; <= 0 disables");
ABSL_FLAG(uint64_t, seed, 1337, "seed for initialisation and the embedded task");
ABSL_FLAG(bool, recompute, false, "recompute each block's activations during backward");
ABSL_FLAG(int32_t, threads, 0, "intra-op threads; 0: LOOM_NUM_THREADS or cores / local ranks");
ABSL_FLAG(std::string, save_dir, "", "directory for resumable checkpoints (step-N subdirectories)");
ABSL_FLAG(int64_t, save_every, 0, "also checkpoint every N steps (0: only at the end)");
ABSL_FLAG(bool, resume, false, "continue from the newest checkpoint in --save_dir");
ABSL_FLAG(std::string, init_from, "", "start from these safetensors weights (Hugging Face names)");
ABSL_FLAG(std::string, export, "", "write the final weights to this .safetensors file");
ABSL_FLAG(std::string, metrics_out, "", "append one JSON object per step to this file");
ABSL_FLAG(bool, eval, false,
          "evaluate instead of training: mean loss of the first --eval_batches batches of --data "
          "(default: a held-out stream of the embedded task, seed + 1)");
ABSL_FLAG(int64_t, eval_batches, 8, "batches of B x T + 1 consecutive tokens for --eval");
ABSL_FLAG(double, peak_gflops, 0.0,
          "peak GFLOP/s for MFU; 0: measure a GEMM at start-up, on bf16 operands under --precision "
          "bf16 (--device cuda: the GPU's dense bf16 peak from loom's table)");
ABSL_FLAG(std::string, device, "cpu",
          "where the model, gradients, activations and optimizer state live: cpu, or cuda (the "
          "first visible GPU; dense models for now; docs/gpu.md)");

namespace loom {
namespace {

using models::StepMetrics;
using models::Trainer;
using models::TrainOptions;

absl::StatusOr<TrainOptions> OptionsFromFlags() {
  TrainOptions o;
  o.preset = absl::GetFlag(FLAGS_preset);
  o.data = absl::GetFlag(FLAGS_data);
  o.steps = absl::GetFlag(FLAGS_steps);
  o.batch = absl::GetFlag(FLAGS_batch);
  o.dp = absl::GetFlag(FLAGS_dp);
  o.tp = absl::GetFlag(FLAGS_tp);
  o.sequence_parallel = absl::GetFlag(FLAGS_sequence_parallel);
  o.tp_chunks = absl::GetFlag(FLAGS_tp_chunks);
  o.pp = absl::GetFlag(FLAGS_pp);
  o.ep = absl::GetFlag(FLAGS_ep);
  o.moe_capacity_factor = absl::GetFlag(FLAGS_moe_capacity_factor);
  o.moe_aux_loss_coef = static_cast<float>(absl::GetFlag(FLAGS_moe_aux_loss_coef));
  o.moe_bias_rate = static_cast<float>(absl::GetFlag(FLAGS_moe_bias_rate));
  o.moe_groups = absl::GetFlag(FLAGS_moe_groups);
  o.moe_top_groups = absl::GetFlag(FLAGS_moe_top_groups);
  o.moe_chunks = absl::GetFlag(FLAGS_moe_chunks);
  o.moe_overlap = absl::GetFlag(FLAGS_moe_overlap);
  o.moe_dual_batch = absl::GetFlag(FLAGS_moe_dual_batch);
  o.moe_hier_dispatch = absl::GetFlag(FLAGS_moe_hier_dispatch);
  o.moe_fold_tp = absl::GetFlag(FLAGS_moe_fold_tp);
  o.moe_dispatch = absl::GetFlag(FLAGS_moe_dispatch);
  o.moe_combine = absl::GetFlag(FLAGS_moe_combine);
  o.attention = absl::GetFlag(FLAGS_attention);
  o.schedule = absl::GetFlag(FLAGS_schedule);
  o.micro_batches = absl::GetFlag(FLAGS_micro_batches);
  o.virtual_stages = absl::GetFlag(FLAGS_virtual_stages);
  o.tp_overlap = absl::GetFlag(FLAGS_tp_overlap);
  o.zero = absl::GetFlag(FLAGS_zero);
  o.grad_accum = absl::GetFlag(FLAGS_grad_accum);
  o.bucket_bytes = static_cast<int64_t>(absl::GetFlag(FLAGS_bucket_mb) * (1 << 20));
  o.overlap_grad_reduce = absl::GetFlag(FLAGS_overlap_grad_reduce);
  o.overlap_param_gather = absl::GetFlag(FLAGS_overlap_param_gather);
  o.sparse_embedding_grad = absl::GetFlag(FLAGS_sparse_embedding_grad);
  o.precision = absl::GetFlag(FLAGS_precision);
  o.grad_reduce_dtype = absl::GetFlag(FLAGS_grad_reduce_dtype);
  o.autocast = absl::GetFlag(FLAGS_autocast);
  o.hsdp_shard = absl::GetFlag(FLAGS_hsdp_shard);
  o.hsdp_reduce_dtype = absl::GetFlag(FLAGS_hsdp_reduce_dtype);
  o.inject_overflow_step = absl::GetFlag(FLAGS_inject_overflow_step);
  o.inject_overflow_count = absl::GetFlag(FLAGS_inject_overflow_count);
  o.nonfinite_skips = absl::GetFlag(FLAGS_nonfinite_skips);
  o.keep_checkpoints = absl::GetFlag(FLAGS_keep_checkpoints);
  o.seq_len = absl::GetFlag(FLAGS_seq_len);
  o.vocab_size = absl::GetFlag(FLAGS_vocab_size);
  o.num_layers = absl::GetFlag(FLAGS_num_layers);
  o.optimizer = absl::GetFlag(FLAGS_optimizer);
  o.lr = static_cast<float>(absl::GetFlag(FLAGS_lr));
  o.min_lr = static_cast<float>(absl::GetFlag(FLAGS_min_lr));
  o.warmup_steps = absl::GetFlag(FLAGS_warmup_steps);
  o.weight_decay = static_cast<float>(absl::GetFlag(FLAGS_weight_decay));
  o.momentum = static_cast<float>(absl::GetFlag(FLAGS_momentum));
  o.grad_clip = static_cast<float>(absl::GetFlag(FLAGS_grad_clip));
  o.seed = absl::GetFlag(FLAGS_seed);
  o.recompute = absl::GetFlag(FLAGS_recompute);
  o.save_dir = absl::GetFlag(FLAGS_save_dir);
  o.resume = absl::GetFlag(FLAGS_resume);
  o.init_from = absl::GetFlag(FLAGS_init_from);
  if (absl::GetFlag(FLAGS_save_every) < 0) {
    return absl::InvalidArgumentError("--save_every must be >= 0");
  }
  if (absl::GetFlag(FLAGS_save_every) > 0 && o.save_dir.empty()) {
    return absl::InvalidArgumentError("--save_every needs --save_dir");
  }
  if (absl::GetFlag(FLAGS_threads) < 0) return absl::InvalidArgumentError("--threads must be >= 0");
  if (absl::GetFlag(FLAGS_inject_straggler_ms) < 0) {
    return absl::InvalidArgumentError("--inject_straggler_ms must be >= 0");
  }
  if (absl::GetFlag(FLAGS_peak_gflops) < 0) {
    return absl::InvalidArgumentError("--peak_gflops must be >= 0");
  }
  return o;
}

// Peak GFLOP/s of this process's threads in the GEMMs' dtype (f32, or bf16 operands with f32
// accumulation: what --precision bf16 runs its GEMMs on, AMX where the CPU has it): loom's GEMM on
// 1024³, the best of 5 trials of about 60 ms after a warm-up. The best, because interference (the
// other ranks starting up beside it, a noisy neighbour) only ever slows a trial down: one long
// trial measured 35 GFLOP/s in one run and 156 in the next on the same machine.
double MeasurePeakGflops(runtime::DType gemm_dtype) {
  const int64_t n = 1024;
  using runtime::Tensor;
  Tensor a = Tensor::Empty({n, n}, gemm_dtype, runtime::MemoryTag::kWorkspace);
  Tensor b = Tensor::Empty({n, n}, gemm_dtype, runtime::MemoryTag::kWorkspace);
  Tensor c = Tensor::Empty({n, n}, runtime::DType::kF32, runtime::MemoryTag::kWorkspace);
  a.Fill(1.0f);
  b.Fill(0.5f);
  const runtime::kernels::MatmulOptions options{.compute_dtype = gemm_dtype};
  for (int warm = 0; warm < 3; ++warm) runtime::kernels::Matmul(a, b, c, options);
  double best = 0.0;
  for (int trial = 0; trial < 5; ++trial) {
    int reps = 0;
    const auto start = std::chrono::steady_clock::now();
    double seconds = 0.0;
    while (seconds < 0.06) {
      runtime::kernels::Matmul(a, b, c, options);
      ++reps;
      seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    }
    best = std::max(best, 2.0 * n * n * n * reps / seconds / 1e9);
  }
  return best;
}

// The largest of the ranks' measured peaks (collective): MFU is then never overstated by one
// rank's slow measurement.
absl::StatusOr<double> JobPeakGflops(comm::Communicator& world, runtime::DType gemm_dtype) {
  runtime::Tensor peak = runtime::Tensor::FromVector<float>(
      {1}, {static_cast<float>(MeasurePeakGflops(gemm_dtype))}, runtime::MemoryTag::kComm);
  if (world.size() > 1) {
    LOOM_RETURN_IF_ERROR(world.AllReduce(peak, peak, comm::ReduceOp::kMax)->Wait());
  }
  return static_cast<double>(peak.data<float>()[0]);
}

// Appends JSON lines to --metrics_out (if given); every line is flushed as it is written.
class MetricsWriter {
 public:
  absl::Status Open(const std::string& path) {
    if (path.empty()) return absl::OkStatus();
    out_.open(path, std::ios::app);
    if (!out_) return absl::NotFoundError(absl::StrCat("--metrics_out ", path, ": cannot open"));
    return absl::OkStatus();
  }
  void Write(const nlohmann::json& j) {
    if (out_.is_open()) out_ << j.dump() << '\n' << std::flush;
  }

 private:
  std::ofstream out_;
};

// What every rank reports after each step, in one all-gather over the job: its peak bytes per
// memory tag, the milliseconds it computed (the step less its waits on other ranks: a straggler's
// is the largest) and the stop signal it received (0: none).
struct RankReport {
  std::vector<int64_t> peak_bytes;  // per memory tag
  double busy_ms = 0.0;
  int stop_signal = 0;
};

// Where the training state's memory is counted: the device's allocator, or the host's.
const runtime::Allocator& StateMemory(const TrainOptions& o) {
  return o.device != nullptr ? *o.device : runtime::Allocator::Default();
}

absl::StatusOr<std::vector<RankReport>> GatherReports(comm::Communicator& world,
                                                      const runtime::Allocator& a, double busy_ms) {
  using runtime::Tensor;
  constexpr int kWords = runtime::kNumMemoryTags + 2;
  std::vector<int64_t> mine;
  for (int t = 0; t < runtime::kNumMemoryTags; ++t) {
    mine.push_back(a.Stats(static_cast<runtime::MemoryTag>(t)).peak_bytes);
  }
  mine.push_back(static_cast<int64_t>(busy_ms * 1000.0));
  mine.push_back(base::StopSignalReceived());
  Tensor in = Tensor::FromVector<int64_t>({kWords}, mine, runtime::MemoryTag::kComm);
  Tensor all =
      Tensor::Empty({world.size() * kWords}, runtime::DType::kI64, runtime::MemoryTag::kComm);
  LOOM_RETURN_IF_ERROR(world.AllGather(in, all)->Wait());
  std::vector<RankReport> out(world.size());
  for (int r = 0; r < world.size(); ++r) {
    const int64_t* row = all.data<int64_t>() + r * kWords;
    out[r].peak_bytes.assign(row, row + runtime::kNumMemoryTags);
    out[r].busy_ms = static_cast<double>(row[runtime::kNumMemoryTags]) / 1000.0;
    out[r].stop_signal = static_cast<int>(row[runtime::kNumMemoryTags + 1]);
  }
  return out;
}

// The rank that computed longest in the step and by how much it exceeded the median rank.
struct Straggler {
  int rank = 0;
  double excess_ms = 0.0;
  double median_ms = 0.0;
};

Straggler SlowestRank(const std::vector<RankReport>& reports) {
  std::vector<double> busy;
  for (const RankReport& r : reports) busy.push_back(r.busy_ms);
  std::vector<double> sorted = busy;
  std::sort(sorted.begin(), sorted.end());
  Straggler s;
  s.median_ms = sorted[(sorted.size() - 1) / 2];
  s.rank = static_cast<int>(std::max_element(busy.begin(), busy.end()) - busy.begin());
  s.excess_ms = busy[s.rank] - s.median_ms;
  return s;
}

// " | slowest rank 1 +212.0 ms" when one rank computed more than 10 % (and 2 ms) longer than the
// median rank; empty otherwise.
std::string StragglerSummary(const Straggler& s) {
  if (s.excess_ms <= std::max(2.0, 0.1 * s.median_ms)) return "";
  return absl::StrFormat(" | slowest rank %d +%.1f ms", s.rank, s.excess_ms);
}

nlohmann::json MemoryJson(const std::vector<int64_t>& per_tag) {
  nlohmann::json j;
  for (int t = 0; t < runtime::kNumMemoryTags; ++t) {
    j[std::string(runtime::MemoryTagName(static_cast<runtime::MemoryTag>(t)))] = per_tag[t];
  }
  return j;
}

absl::Status RunEval(Trainer& trainer, MetricsWriter& metrics) {
  const TrainOptions& o = trainer.options();
  LOOM_ASSIGN_OR_RETURN(
      models::data::TokenDataset data,
      models::LoadDataset(o.data, o.seed + 1, trainer.model().config().vocab_size));
  const int64_t batches = absl::GetFlag(FLAGS_eval_batches);
  LOOM_ASSIGN_OR_RETURN(double loss, trainer.Evaluate(data, batches));
  std::printf("eval_loss %.6f (%lld batches of %lld x %lld tokens from %s)\n", loss,
              static_cast<long long>(batches), static_cast<long long>(o.batch),
              static_cast<long long>(trainer.seq_len()), data.name().c_str());
  metrics.Write({{"eval_loss", loss},
                 {"eval_batches", batches},
                 {"batch", o.batch},
                 {"seq_len", trainer.seq_len()},
                 {"data", data.name()}});
  return absl::OkStatus();
}

// One line per rank: "rank 1 memory now: param 1.50 MiB (peak 1.50 MiB), grad ...", in rank order.
absl::Status PrintMemoryPerRank(comm::Communicator& world, const runtime::Allocator& a) {
  for (int r = 0; r < world.size(); ++r) {
    if (r == world.rank()) {
      std::printf("rank %d memory now: %s\n", r, a.Summary().c_str());
      std::fflush(stdout);
    }
    LOOM_RETURN_IF_ERROR(world.Barrier()->Wait());
  }
  return absl::OkStatus();
}

// LOOM_CUDA_PROFILE=1 on a device: each rank's device time per kernel entry point, in rank order.
absl::Status PrintDeviceProfile(comm::Communicator& world) {
  const auto report = runtime::kernels::CudaTwins().op_report;
  if (report == nullptr) return absl::OkStatus();
  for (int r = 0; r < world.size(); ++r) {
    if (r == world.rank()) {
      const std::vector<runtime::kernels::DeviceOpTime> ops = report();
      double total = 0.0;
      for (const auto& op : ops) total += op.ms;
      std::printf("rank %d device time by kernel entry point (LOOM_CUDA_PROFILE=1), %.1f ms:\n", r,
                  total);
      for (const auto& op : ops) {
        std::printf("  %-28s %8lld calls %10.2f ms %5.1f%%\n", op.op.c_str(),
                    static_cast<long long>(op.calls), op.ms,
                    total > 0 ? 100.0 * op.ms / total : 0.0);
      }
      std::fflush(stdout);
    }
    LOOM_RETURN_IF_ERROR(world.Barrier()->Wait());
  }
  return absl::OkStatus();
}

// MoE: " | expert load max/mean 1.42 (layer 3)", the most imbalanced layer of the step, and the
// dropped slots under a capacity factor; empty for a dense model.
std::string LoadSummary(const StepMetrics& m) {
  double worst = 0.0;
  size_t worst_layer = 0;
  for (size_t l = 0; l < m.expert_load.size(); ++l) {
    const std::vector<int64_t>& load = m.expert_load[l];
    const double mean = std::accumulate(load.begin(), load.end(), 0.0) / load.size();
    const double ratio = mean > 0 ? *std::max_element(load.begin(), load.end()) / mean : 0.0;
    if (ratio > worst) worst = ratio, worst_layer = l;
  }
  if (m.expert_load.empty()) return "";
  return absl::StrFormat(" | expert load max/mean %.2f (MoE layer %d)%s", worst, worst_layer,
                         m.dropped_tokens > 0 ? absl::StrCat(" | dropped ", m.dropped_tokens) : "");
}

// A periodic checkpoint that could not be written (a full disk) does not stop the run: every rank
// warns (the writer's error is shared, so all decide alike), the previous checkpoints are
// intact, and the next interval tries again. The final and the preemption checkpoint must succeed.
absl::Status SavePeriodic(Trainer& trainer, bool leader, int64_t save_every) {
  const absl::Status saved = trainer.SaveCheckpoint();
  if (saved.ok() || !leader) return absl::OkStatus();
  LOOM_LOG(WARNING) << "the checkpoint of step " << trainer.step() << " was not saved (" << saved
                    << "); the earlier checkpoints in " << trainer.options().save_dir
                    << " are intact; training continues and tries again at step "
                    << trainer.step() + save_every;
  return absl::OkStatus();
}

// Preemption (SIGTERM / SIGUSR1 on any rank, agreed after the step): a checkpoint of the step just
// finished, then exit 0. Without --save_dir nothing can be kept: an error.
absl::Status StopForSignal(Trainer& trainer, bool leader, int signal, int rank) {
  const TrainOptions& o = trainer.options();
  const std::string cause = absl::StrCat(base::SignalName(signal), " on rank ", rank);
  if (o.save_dir.empty()) {
    return absl::AbortedError(absl::StrCat("stopped by ", cause, " after step ", trainer.step(),
                                           "; nothing saved (no --save_dir)"));
  }
  const absl::Status saved = trainer.SaveCheckpoint();
  if (!saved.ok()) {
    return absl::Status(saved.code(), absl::StrCat("stopping for ", cause, " after step ",
                                                   trainer.step(), ": ", saved.message()));
  }
  if (leader) {
    std::printf("stopped by %s after step %lld: saved checkpoint to %s; continue with --resume\n",
                cause.c_str(), static_cast<long long>(trainer.step()), o.save_dir.c_str());
    std::fflush(stdout);
  }
  return absl::OkStatus();
}

absl::Status RunTraining(Trainer& trainer, comm::Communicator& world, MetricsWriter& metrics,
                         double peak_gflops) {
  const TrainOptions& o = trainer.options();
  const bool leader = world.rank() == 0;
  const int64_t save_every = absl::GetFlag(FLAGS_save_every);
  const int straggler_ms = world.rank() == absl::GetFlag(FLAGS_inject_straggler_rank)
                               ? absl::GetFlag(FLAGS_inject_straggler_ms)
                               : 0;
  bool warned_mfu = false;
  while (trainer.step() < o.steps) {
    const auto start = std::chrono::steady_clock::now();
    if (straggler_ms > 0) std::this_thread::sleep_for(std::chrono::milliseconds(straggler_ms));
    LOOM_ASSIGN_OR_RETURN(StepMetrics m, trainer.Step());
    const double busy_ms =
        std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start)
            .count() -
        m.exposed_reduce_ms - m.exposed_gather_ms - m.exposed_tp_ms - m.exposed_a2a_ms;
    LOOM_ASSIGN_OR_RETURN(const std::vector<RankReport> reports,
                          GatherReports(world, StateMemory(o), busy_ms));
    const Straggler straggler = SlowestRank(reports);
    const double mfu = m.gflops / (peak_gflops * world.size());
    if (leader && mfu > 1.0 && !warned_mfu) {
      warned_mfu = true;
      LOOM_LOG(WARNING) << "MFU above 100 % at step " << m.step << ": the peak (" << peak_gflops
                        << " GFLOP/s per rank) is too low to be trusted; pass --peak_gflops";
    }
    if (leader) {
      std::printf(
          "step %5lld/%lld | loss %.6f | lr %.3e | grad norm %.4f | %8.1f ms | %9.0f tok/s | "
          "%7.2f GFLOP/s | MFU %5.1f%%%s%s%s%s\n",
          static_cast<long long>(m.step), static_cast<long long>(o.steps), m.loss, m.lr,
          m.grad_norm, m.step_ms, m.tokens_per_s, m.gflops, 100.0 * mfu,
          o.precision != "fp16"
              ? ""
              : absl::StrFormat(" | loss scale %g%s", m.loss_scale,
                                m.skipped ? " | overflow: step skipped, scale halved" : "")
                    .c_str(),
          o.precision != "fp16" && m.skipped ? " | non-finite: step skipped" : "",
          StragglerSummary(straggler).c_str(), LoadSummary(m).c_str());
      std::fflush(stdout);
    }
    nlohmann::json per_rank = nlohmann::json::array(), busy = nlohmann::json::array();
    for (const RankReport& r : reports) {
      per_rank.push_back(MemoryJson(r.peak_bytes));
      busy.push_back(r.busy_ms);
    }
    metrics.Write({{"step", m.step},
                   {"loss", m.loss},
                   {"lr", m.lr},
                   {"grad_norm", m.grad_norm},
                   {"step_ms", m.step_ms},
                   {"tokens_per_s", m.tokens_per_s},
                   {"gflops", m.gflops},
                   {"mfu", mfu},
                   {"exposed_reduce_ms", m.exposed_reduce_ms},
                   {"exposed_gather_ms", m.exposed_gather_ms},
                   {"exposed_tp_ms", m.exposed_tp_ms},
                   {"exposed_a2a_ms", m.exposed_a2a_ms},
                   {"loss_scale", m.loss_scale},
                   {"skipped", m.skipped},
                   {"expert_load", m.expert_load},
                   {"dropped_tokens", m.dropped_tokens},
                   {"busy_ms_per_rank", busy},
                   {"slowest_rank", straggler.rank},
                   {"slowest_rank_excess_ms", straggler.excess_ms},
                   {"peak_bytes", MemoryJson(reports[0].peak_bytes)},
                   {"peak_bytes_per_rank", per_rank}});
    // A stop signal ends the run after this step (the last step ends as usual: a full save).
    for (int r = 0; r < world.size() && trainer.step() < o.steps; ++r) {
      if (reports[r].stop_signal != 0) {
        return StopForSignal(trainer, leader, reports[r].stop_signal, r);
      }
    }
    if (save_every > 0 && !m.skipped && m.step % save_every == 0 && m.step < o.steps) {
      LOOM_RETURN_IF_ERROR(SavePeriodic(trainer, leader, save_every));
    }
  }
  if (!o.save_dir.empty()) {
    LOOM_RETURN_IF_ERROR(trainer.SaveCheckpoint());
    if (leader) {
      std::printf("saved checkpoint of step %lld to %s\n", static_cast<long long>(trainer.step()),
                  o.save_dir.c_str());
    }
  }
  const std::string trace = absl::GetFlag(FLAGS_trace);
  if (!trace.empty()) {
    LOOM_RETURN_IF_ERROR(parallel::pipeline::WriteChromeTrace(trainer.step_trace(), world, trace));
    if (leader) std::printf("wrote the last step's timeline to %s\n", trace.c_str());
  }
  // The training state, before any export.
  LOOM_RETURN_IF_ERROR(PrintMemoryPerRank(world, StateMemory(o)));
  LOOM_RETURN_IF_ERROR(PrintDeviceProfile(world));
  const std::string export_path = absl::GetFlag(FLAGS_export);
  if (!export_path.empty()) {
    LOOM_RETURN_IF_ERROR(trainer.ExportWeights(export_path));
    if (leader) std::printf("exported weights to %s\n", export_path.c_str());
  }
  return absl::OkStatus();
}

// The flags this program defines (not Abseil's own), by name.
std::vector<std::pair<std::string, const absl::CommandLineFlag*>> ProgramFlags() {
  std::vector<std::pair<std::string, const absl::CommandLineFlag*>> flags;
  for (const auto& [name, flag] : absl::GetAllFlags()) {
    if (absl::StrContains(flag->Filename(), "train_gpt")) flags.emplace_back(name, flag);
  }
  std::sort(flags.begin(), flags.end());
  return flags;
}

// Every flag this program defines, as name=value, for the ranks' configuration agreement.
std::vector<parallel::ConfigField> FlagSettings() {
  std::vector<parallel::ConfigField> fields;
  for (const auto& [name, flag] : ProgramFlags()) fields.push_back({name, flag->CurrentValue()});
  return fields;
}

// The job's world: every launched rank over --comm, or one local rank without a launcher (NCCL
// even then, when --comm nccl asks for it).
absl::StatusOr<std::unique_ptr<comm::Communicator>> MakeWorld(int world_size) {
  if (world_size == 1 && absl::GetFlag(FLAGS_comm) != "nccl") {
    return std::move(comm::MakeLocalWorld(1)[0]);
  }
  return comm::MakeWorldCommunicator(absl::GetFlag(FLAGS_comm), comm::CommOptions::FromEnv());
}

absl::Status Main() {
  LOOM_ASSIGN_OR_RETURN(TrainOptions options, OptionsFromFlags());
  LOOM_ASSIGN_OR_RETURN(const runtime::OpenedDevice device,
                        runtime::OpenDevice(absl::GetFlag(FLAGS_device)));
  options.device = device.allocator;
  // Everything that can be checked without the other ranks is, before the first collective, so a
  // bad setting fails on every rank with the same message.
  const int world_size = comm::LaunchedWorldSize();
  if (options.dp == 0) {  // the ranks tensor, pipeline and expert parallelism leave
    const int64_t model = static_cast<int64_t>(options.tp) * options.pp * options.ep;
    if (options.tp < 1 || options.pp < 1 || options.ep < 1 || world_size % model != 0) {
      return absl::InvalidArgumentError(
          absl::StrCat("--tp ", options.tp, " x --pp ", options.pp,
                       options.ep != 1 ? absl::StrCat(" x --ep ", options.ep) : "",
                       " does not divide the ", world_size, " ranks of the job"));
    }
    options.dp = static_cast<int>(world_size / model);
  }
  const parallel::MeshShape shape{.dp = options.dp,
                                  .tp = options.tp,
                                  .pp = options.pp,
                                  .ep = options.ep,
                                  .order = absl::GetFlag(FLAGS_order)};
  if (options.pp > 1 && absl::GetFlag(FLAGS_eval)) {
    return absl::InvalidArgumentError(
        "--eval runs on one rank; evaluate a --pp run's --export (or checkpoint) without --pp");
  }
  if (absl::GetFlag(FLAGS_comm) == "nccl" && options.device == nullptr) {
    return absl::InvalidArgumentError(
        "--comm nccl moves device tensors: it needs --device cuda (or choose a host backend)");
  }
  if (absl::GetFlag(FLAGS_comm) == "nccl" && options.pp > 1) {
    return absl::InvalidArgumentError(
        "--comm nccl cannot run --pp yet: the pipeline's sends need to complete before their "
        "receives are posted, and NCCL's do not; use a host backend (--comm shm|mpi|ring|hier), "
        "which stages device tensors through host memory");
  }
  LOOM_RETURN_IF_ERROR(shape.Validate(world_size));
  LOOM_RETURN_IF_ERROR(models::ValidateTrainOptions(options));
  if (absl::GetFlag(FLAGS_eval) && world_size > 1) {
    return absl::InvalidArgumentError("--eval runs on one rank; start it without mpirun");
  }
  if (absl::GetFlag(FLAGS_threads) > 0) runtime::SetNumThreads(absl::GetFlag(FLAGS_threads));
  LOOM_ASSIGN_OR_RETURN(std::unique_ptr<comm::Communicator> world, MakeWorld(world_size));
  LOOM_RETURN_IF_ERROR(parallel::AgreeOnConfig(*world, FlagSettings()));
  LOOM_ASSIGN_OR_RETURN(std::unique_ptr<parallel::Mesh> mesh,
                        parallel::Mesh::Create(*world, shape));
  const bool leader = world->rank() == 0;
  if (leader && !options.save_dir.empty()) {
    // Saves cut short by a crash leave ".tmp-step-*" directories, which nothing reads.
    LOOM_ASSIGN_OR_RETURN(const std::vector<std::string> removed,
                          runtime::io::RemoveInterruptedSaves(options.save_dir));
    for (const std::string& dir : removed) {
      std::printf("removed %s, left by a save that did not finish\n", dir.c_str());
    }
  }
  MetricsWriter metrics;
  if (leader) LOOM_RETURN_IF_ERROR(metrics.Open(absl::GetFlag(FLAGS_metrics_out)));
  if (leader && device.visible > 1 && world_size > 1) {
    LOOM_LOG(WARNING) << "--device cuda: every rank uses the first of the " << device.visible
                      << " visible GPUs (" << device.description
                      << "); give each rank its own: mpirun ... bash scripts/gpu_per_rank.sh "
                         "train_gpt ... (docs/gpu.md)";
  }
  LOOM_ASSIGN_OR_RETURN(std::unique_ptr<Trainer> trainer,
                        Trainer::Create(options, parallel::ParallelContext::FromMesh(*mesh)));
  if (leader) {
    std::printf("model %s, %lld parameters | data %s | B %lld, T %lld | threads %d%s\n",
                trainer->model().config().ToString().c_str(),
                static_cast<long long>(trainer->model().NumParameters()),
                trainer->dataset().description().c_str(), static_cast<long long>(options.batch),
                static_cast<long long>(trainer->seq_len()), runtime::NumThreads(),
                device.allocator != nullptr ? (" | device " + device.description).c_str() : "");
    const std::string hsdp =
        options.hsdp_shard > 0 ? absl::StrCat(" | hsdp: shards of ", options.hsdp_shard, " ranks, ",
                                              options.dp / options.hsdp_shard, " replicas, ",
                                              options.hsdp_reduce_dtype, " between them")
                               : "";
    const std::string micro =
        options.pp > 1 ? absl::StrCat("schedule ", options.schedule, ", ",
                                      models::PipelineMicroBatches(options), " micro-batches")
                       : absl::StrCat("grad_accum ", options.grad_accum);
    const std::string fold = options.moe_fold_tp
                                 ? absl::StrCat(" | experts over ep x tp (",
                                                options.ep * options.tp, " ranks, --moe_fold_tp)")
                                 : "";
    std::printf("layout %s%s | zero %d%s | %s | %d buckets | comm %s\n", shape.ToString().c_str(),
                fold.c_str(), options.zero, hsdp.c_str(), micro.c_str(),
                trainer->data_parallel().num_buckets(), world->backend_name().c_str());
    if (!trainer->resumed_from().empty()) {
      std::printf("resumed from %s at step %lld\n", trainer->resumed_from().c_str(),
                  static_cast<long long>(trainer->step()));
    }
  }
  if (absl::GetFlag(FLAGS_eval)) {
    base::UnblockStopSignals();  // evaluation keeps nothing: a stop signal ends it at once
    return RunEval(*trainer, metrics);
  }
  double peak = absl::GetFlag(FLAGS_peak_gflops);
  if (peak == 0.0 && device.allocator != nullptr) {
    if (device.peak_bf16_gflops == 0.0) {
      return absl::InvalidArgumentError(
          absl::StrCat("the dense bf16 peak of ", device.description,
                       " is not in loom's table (runtime/device_peaks.cc): pass --peak_gflops"));
    }
    peak = device.peak_bf16_gflops;
    if (leader) {
      std::printf(
          "peak %.1f GFLOP/s (dense bf16 of %s, from the data sheet; --peak_gflops sets "
          "it)\n",
          peak, device.description.c_str());
    }
  } else if (peak == 0.0) {
    // The dtype the layers' GEMMs take their operands in under this --precision.
    parallel::Stash settings;
    settings.SetActivationDType(models::PrecisionDType(options.precision));
    const runtime::DType gemm = settings.GemmDType();
    LOOM_ASSIGN_OR_RETURN(peak, JobPeakGflops(*world, gemm));
    if (leader) {
      std::printf(
          "peak %.1f GFLOP/s per rank (measured: loom GEMM 1024^3 on %s operands, %d threads, "
          "best of 5 trials, largest over the ranks; --peak_gflops sets it)\n",
          peak, std::string(runtime::DTypeName(gemm)).c_str(), runtime::NumThreads());
    }
  }
  if (leader) {
    std::printf("FLOPs per token %.4g (6N + 12 L T C)\n",
                trainer->model().TrainingFlopsPerToken(trainer->seq_len()));
  }
  base::StartStopSignalWatcher();  // from here SIGTERM / SIGUSR1 stop after the step
  return RunTraining(*trainer, *world, metrics, peak);
}

// --help / -h: the usage line and this program's flags with their defaults, on stdout, exit 0
// (Abseil's own --help exits 1, which reads as a failure).
bool PrintHelpIfAsked(int argc, char** argv) {
  bool asked = false;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    asked = asked || arg == "--help" || arg == "-h" || arg == "-help";
  }
  if (!asked) return false;
  std::printf("%s\n\nFlags (default in brackets):\n", absl::ProgramUsageMessage().data());
  for (const auto& [name, flag] : ProgramFlags()) {
    std::printf("  --%s [%s]\n      %s\n", name.c_str(), flag->DefaultValue().c_str(),
                flag->Help().c_str());
  }
  return true;
}

}  // namespace
}  // namespace loom

int main(int argc, char** argv) {
  // Before any thread exists (MPI's, the communicators'), so that none is ever interrupted by a
  // stop signal: the watcher takes them once training starts (runtime/base/stop_signal.h).
  loom::base::BlockStopSignals();
  absl::SetProgramUsageMessage(
      "Trains a GPT on one rank or data-parallel under mpirun, or evaluates one with --eval.\n"
      "  train_gpt --preset tiny --steps 300 --metrics_out metrics.jsonl\n"
      "  mpirun -np 2 train_gpt --zero 1 --precision bf16\n"
      "See docs/train_gpt.md for every flag and the output formats.");
  if (loom::PrintHelpIfAsked(argc, argv)) return 0;
  const std::vector<char*> positional = absl::ParseCommandLine(argc, argv);
  if (positional.size() > 1) {
    std::fprintf(stderr, "train_gpt: unexpected argument '%s' (flags look like --steps=10)\n",
                 positional[1]);
    return 2;
  }
  const absl::Status status = loom::Main();
  if (!status.ok()) {
    std::fprintf(stderr, "train_gpt: %s\n", std::string(status.ToString()).c_str());
    return 1;
  }
  return 0;
}
