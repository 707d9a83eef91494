// DataParallel: DDP and ZeRO-1/2/3 over a data-parallel group, driven by a model's parameter
// units and grad-ready hooks.
//
//   DataParallel::Options o{.zero_stage = 1, .bucket_bytes = 1 << 20};
//   LOOM_ASSIGN_OR_RETURN(auto dp, DataParallel::Create(model.ParameterUnits(), dp_group, o));
//   model.SetParameterUseHooks(dp.get());
//   dp->ZeroGrad();
//   for (int m = 0; m < micro_batches; ++m) {
//     dp->BeginMicroBatch(/*last=*/m + 1 == micro_batches);
//     model.ForwardLoss(stash, ...);
//     model.Backward(stash, 1.0f / micro_batches);   // buckets reduce while backward runs
//   }
//   LOOM_RETURN_IF_ERROR(dp->FinishBackward());      // averaged gradients (or their shard)
//   LOOM_ASSIGN_OR_RETURN(double norm, dp->ClipGradNorm(1.0));
//   optimizer.Step(dp->Slots(), lr);                 // this rank's shard under ZeRO
//   LOOM_RETURN_IF_ERROR(dp->FinishOptimizerStep()); // ZeRO-1/2: all-gather the parameters
//
// Layout. Parameters are packed, in reverse order of first use (the order backward makes their
// gradients final), into buckets of at most `bucket_bytes` (a parameter is never split; ZeRO-3
// also starts a bucket at every unit boundary). Each bucket is one flat f32 buffer for values and
// one for gradients; parameters become views into them. A bucket is padded to a multiple of the
// group size and rank r owns elements [r·S, (r+1)·S) of it, S = padded / size.
//
// Stages (bytes per rank, Ψ parameters, P = Σ padded bucket sizes ≈ Ψ):
//   0 (DDP)  values 4P, gradients 4P; each bucket is all-reduced (average) the moment its last
//            gradient is final, while the rest of backward runs; AdamW state 8Ψ.
//   1        as 0 but each bucket is reduce-scattered into this rank's gradient shard (4P/size
//            more); the optimizer updates only the owned shard (state 8Ψ/size); afterwards the
//            updated shards are all-gathered into every rank's values.
//   2        gradients sharded: a bucket's full gradient buffer exists only from the backward of
//            the first unit that uses it until its reduce-scatter completes; persistent
//            gradients 4P/size.
//   3        values sharded too: a unit's buckets are all-gathered just before the unit runs
//            (the next unit's are prefetched) and released after the pass's last use; persistent
//            values 4P/size.
// Mixed precision (param_dtype bf16 or f16): the f32 master weights are optimizer state (tag
// optimizer: 4P at stage 0, 4P/size at stages 1-3, where each rank keeps only the master of its
// shard) and the parameters are a 16-bit working copy (tag param: 2P, or 2P/size under ZeRO-3,
// which also all-gathers in 16 bits). Just before a unit runs, its buckets' working values
// are widened into f32 tensors (tag workspace; the CPU kernels compute in f32, as bf16 GEMMs
// accumulate in f32) and released after the pass's last use; after each optimizer step the
// working copy is re-derived from the master (ZeRO-1/2 all-gather it in 16 bits). Gradients are
// accumulated in f32 (Megatron's main grads); reduce_dtype bf16 sends them over the wire in bf16
// (the collectives add in f32) and widens the result.
// Gradient accumulation: with stages 0 and 1 gradients accumulate in the full buffers and reduce
// only on the last micro-batch; stages 2 and 3 keep no full gradients, so they reduce-scatter
// every micro-batch and add into the shard (as DeepSpeed does).
//
// Every rank must create the engine with the same units and options and start from the same
// parameter values. Reductions are issued in bucket order on every rank, so the collectives on the
// group match. A failed collective is fatal (LOOM_CHECK) inside the hooks, since a layer cannot
// run on parameters that never arrived; the communicator has already named the op and ranks.
#pragma once

#include <cstdint>
#include <limits>
#include <memory>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "comm/communicator.h"
#include "optim/optimizer.h"
#include "parallel/layer.h"
#include "parallel/parameter.h"
#include "runtime/allocator.h"

namespace loom::parallel {

class DataParallel : public ParameterUseHooks {
 public:
  struct Options {
    int zero_stage = 0;              // 0 (DDP), 1, 2 or 3
    int64_t bucket_bytes = 1 << 20;  // f32 bytes per gradient bucket (at least one parameter)
    runtime::DType param_dtype = runtime::DType::kF32;   // working parameters: f32, bf16, f16
    runtime::DType reduce_dtype = runtime::DType::kF32;  // gradients on the wire: f32, bf16, f16
    // Start each bucket's reduction as soon as its gradients are final (true), or only after the
    // backward pass (false: the baseline that measures how much of the reduction overlap hides).
    bool overlap = true;
    // Stages 1-2: all-gather the updated parameters while the next forward runs (started at the
    // first unit's BeforeUse, in order of first use; each unit waits only for its own buckets),
    // instead of at the end of FinishOptimizerStep. Until a unit's next use, GatherParameters or
    // WaitForParameters, its parameters' values are stale or being written: read them only after
    // one of those.
    bool overlap_param_gather = false;
    // nullptr: Allocator::Default(). Buffers collectives write into come from the group's shared
    // arena when it has one; they are counted in Allocator::Default() whatever this is.
    runtime::Allocator* allocator = nullptr;
    // HSDP (stages 1-3): `group` is the shard group (typically the ranks of one host) and
    // `replicas` the ranks that hold the same shard elsewhere (one per shard group, typically one
    // per host). Each reduced shard is all-reduced (averaged) across `replicas` on the step's last
    // micro-batch, as soon as its reduce-scatter completes: reduce-scatter inside, all-reduce of
    // the shard across, all-gather inside. nullptr: no replication.
    comm::Communicator* replicas = nullptr;
    // HSDP: the dtype of that all-reduce across replicas (f32, bf16, f16; added in f32), e.g. bf16
    // across hosts while reduce_dtype keeps f32 inside them.
    runtime::DType replica_reduce_dtype = runtime::DType::kF32;
    // Groups beside data parallelism (nullptr: none). `tp` and `pp` together hold the other
    // pieces of the same model replica: the gradient norm sums over each in turn and the finite
    // check agrees over them, so every rank of the job clips and skips alike. `tp` is also where a
    // gradient partial over "tp" (ShardSpec::grad_partial_over) is summed, and a parameter
    // replicated over tp counts in the norm on its rank 0 only. `embedding`: the tied embedding's
    // copies (first and last pipeline stage, "embedding" partial gradients) are summed there and
    // counted on its rank 0 only.
    // `ep`: expert parallelism. Its ranks hold other experts (parameters split over "ep", counted
    // in the norm on every rank) and route other tokens through the same replicated parameters,
    // whose gradients are partial over "ep" and summed there (the model scales its loss by 1/ep
    // so that sum is the mean over the ep ranks' tokens); replicated parameters count in the norm
    // on ep rank 0 only.
    comm::Communicator* tp = nullptr;
    comm::Communicator* pp = nullptr;
    comm::Communicator* ep = nullptr;
    // `ep_tp`: the ep × tp ranks, where MoE layers fold expert parallelism over tensor
    // parallelism (kEpTpAxis, parallel/shard.h): their experts are split over "ep_tp" (counted
    // in the norm on every rank) and their router and shared experts' gradients are partial over
    // it (summed there; counted on its rank 0 only, as for tp and ep).
    comm::Communicator* ep_tp = nullptr;
    comm::Communicator* embedding = nullptr;
    // Ordered issue: every collective of the engine is issued at a point of the program alone,
    // the same on every rank, never where a Test() happened to see one complete. A reduction's
    // completion (which starts HSDP's all-reduce across replicas) and a partial gradient's sum
    // (whose arrival readies its bucket) are taken kIssueLag issues later, waiting if needed, or
    // at the end of backward. Needed where every rank must queue the calls of its communicators
    // in one order (NCCL: kernels of different communicators waiting for their peers on one
    // device); on by itself when `group` or `replicas` is NCCL's.
    bool ordered_issue = false;
    // A tied token embedding table (one of the units' parameters, used by the lookup and by the
    // LM head) whose gradient travels in two parts: the head's dense part is reduced with its
    // bucket as soon as the head's backward is done (early in backward, not at its end), and the
    // lookup's part, which touches only the rows of the batch's tokens, is all-gathered after
    // backward as (token ids, gradient rows) — N·C values per rank instead of V·C — and every rank
    // adds all ranks' rows (in rank order, f32, averaged) into its reduced gradient or shard.
    // For slow links: the tail of the reduction after backward shrinks by the table's size.
    // A table replicated or split over tp (a vocabulary shard: the lookup hands over the rows of
    // its own tokens, in shard coordinates); not split or shared by pipeline or expert
    // parallelism; on the host. With HSDP the rows of every group are added, and the table
    // stays sharded (its gather runs inside the host). nullptr: off.
    Parameter* sparse_embedding = nullptr;
  };
  static constexpr size_t kIssueLag = 2;

  // `units`: the model's ParameterUnits(); every parameter must be replicated or a tensor-parallel
  // shard (the engine works on local shapes: each tp rank data-parallelises its shard), and either
  // allocated or have an initializer (GptModel::SetInitializers), in which case only what this rank
  // holds is ever filled — ZeRO-3 never builds the whole model. Takes over the parameters' storage
  // (values are copied into the flat buffers; ZeRO-3 keeps only this rank's shard). `group` must
  // outlive the engine. InvalidArgument for a bad stage or bucket size, or a parameter that is not
  // replicated.
  static absl::StatusOr<std::unique_ptr<DataParallel>> Create(
      std::vector<std::vector<Parameter*>> units, comm::Communicator& group, Options options);
  ~DataParallel() override;

  // Zeroes the gradients of the step (call before the first micro-batch).
  void ZeroGrad();
  // Starts a micro-batch; `last`: the last one of this optimizer step. `passes`: the backward
  // passes that cover it (dual micro-batch overlap runs its two halves interleaved: 2); a
  // gradient is final once its grad-ready hook has fired that many times, and is then reduced as
  // with one pass (partial gradients summed at once: every rank runs the same passes in the same
  // order).
  void BeginMicroBatch(bool last, int passes = 1);
  // Pipeline schedules run a step's micro-batches interleaved: instead of BeginMicroBatch, a
  // parameter's gradient is final once its grad-ready hook has fired `micro_batches` times (the
  // step's last W of it), whatever order they come in. Every ZeRO stage: stage 2 keeps the full
  // gradients from a parameter's first W to its last, then reduce-scatters them; stage 3 also
  // gathers a unit's parameters for each of its F, B and W passes (three gathers per micro-batch
  // where the flat backward takes two) and frees them after.
  void BeginPipelineStep(int micro_batches);
  // Waits for every reduction of the step: afterwards Slots() hold the averaged gradients.
  absl::Status FinishBackward();
  // The global gradient norm (over every rank's shard under ZeRO) and, when max_norm > 0 and the
  // norm exceeds it, every local gradient scaled by max_norm / norm. Collective for stages >= 1.
  absl::StatusOr<double> ClipGradNorm(double max_norm);
  // Whether every gradient of the step is finite on every rank (collective): the loss scaler's
  // overflow check, agreed by all ranks.
  absl::StatusOr<bool> GradientsFinite();
  // The name of the first parameter, in order of first use, whose gradient holds a non-finite
  // value on some rank of the group or of the tp and ep groups (the same parameters on each); ""
  // if none (collective over them). A pipeline stage names one of its own parameters.
  absl::StatusOr<std::string> FirstNonFiniteGradient();
  // Multiplies every local gradient (what Slots() hold) by `factor` (unscaling).
  void ScaleGradients(float factor);
  // What the optimizer updates: every parameter (stage 0) or the pieces of parameters inside this
  // rank's shards, named after their parameter (stages >= 1). Stable from step to step.
  const std::vector<optim::ParamSlot>& Slots() const { return slots_; }
  // Checkpoints in one format whatever the layout: every parameter's optimizer state whole, named
  // "<parameter><suffix>" (suffixes from Optimizer::StateSuffixes), flat f32.
  // GatherOptimizerState turns this rank's State() into that (collective for stages >= 1: the
  // shards are all-gathered); ShardOptimizerState cuts it back to this rank's slots (local).
  // InvalidArgument / FailedPrecondition naming the tensor when one is missing or has the wrong
  // size.
  absl::StatusOr<std::vector<optim::NamedTensor>> GatherOptimizerState(
      const std::vector<optim::NamedTensor>& local, const std::vector<std::string>& suffixes);
  absl::StatusOr<std::vector<optim::NamedTensor>> ShardOptimizerState(
      const std::vector<optim::NamedTensor>& whole, const std::vector<std::string>& suffixes) const;
  // Brings every rank's parameters up to date after the optimizer updated the master shard:
  // stages 1-2 all-gather the updated shards, mixed precision re-derives the working copy.
  // With overlap_param_gather the all-gathers are only staged here, and started and waited for
  // where the parameters are next used (BeforeUse), or by WaitForParameters.
  absl::Status FinishOptimizerStep();
  // Starts and waits for the parameter all-gathers FinishOptimizerStep left (overlap_param_gather),
  // so the parameters' values can be read; the first error. Collective when some were left.
  absl::Status WaitForParameters();
  // Binds every parameter's value to its full f32 master value (stage 3 all-gathers it), e.g. to
  // export or checkpoint the weights; the next use of a unit rebinds its working values.
  // Collective for stage 3.
  absl::Status GatherParameters();
  // Drops what GatherParameters bound (ZeRO-3 and mixed precision: the full f32 values), so the
  // next step starts from the steady-state footprint. Local.
  void ReleaseParameters();

  // ParameterUseHooks (called by the model).
  void BeforeUse(int unit, Pass pass) override;
  void AfterUse(int unit, Pass pass) override;

  int zero_stage() const { return options_.zero_stage; }
  int num_buckets() const { return static_cast<int>(buckets_.size()); }
  // Elements per bucket before padding (sums to the number of parameter elements).
  std::vector<int64_t> BucketNumels() const;
  // Time spent waiting for reductions in the last FinishBackward (what backward did not hide).
  double exposed_reduce_ms() const { return exposed_reduce_ms_; }
  // Time the units of this step (since ZeroGrad) waited for their parameters' all-gathers:
  // ZeRO-3's, and with overlap_param_gather the previous step's updated parameters (what the passes
  // did not hide).
  double exposed_gather_ms() const { return exposed_gather_ms_; }
  // Options::sparse_embedding: the rows this rank sent in the last FinishBackward, one per
  // distinct token of its batch (its rows of a token summed first), padding not counted.
  int64_t rows_sent() const { return rows_sent_; }
  // The collectives of the current step (since ZeroGrad), in launch order, for timelines: each
  // bucket's gradient reduction, and its parameters' all-gather (ZeRO-1/2's of the updated
  // shards, issued at the first use in forward; ZeRO-3's before each use); the bucket, when it
  // was launched and when it completed (microseconds of the steady clock; 0 while in flight or
  // never waited for). A bucket that needs no communication is not listed.
  struct CommSpan {
    int bucket = 0;
    bool gather = false;  // a parameter all-gather; false: a gradient reduction
    int64_t start_us = 0;
    int64_t end_us = 0;
  };
  const std::vector<CommSpan>& comm_spans() const { return comm_spans_; }

 private:
  // The slots' gradients, in slot order.
  std::vector<runtime::Tensor> Grads() const;

  struct Bucket {
    std::vector<Parameter*> params;
    std::vector<int64_t> offsets;  // element offset of each parameter in the flat buffers
    std::vector<int> units;        // units that use a parameter of this bucket, ascending
    int64_t numel = 0;
    int64_t shard = 0;               // padded / group size
    runtime::Tensor master;          // f32 values: full or this rank's shard (see master_full())
    runtime::Tensor low;             // mixed precision: the 16-bit working copy of `master`
    runtime::Tensor gathered;        // stage 3, while gathering: full, in the working dtype
    runtime::Tensor gather_in;       // stages 1-2, while gathering: this rank's updated shard
    runtime::Tensor value;           // full f32 values bound to the parameters (while in use)
    bool value_is_master = false;    // `value` holds the master (GatherParameters), not working
    runtime::Tensor grad;            // full gradients (stages 2-3: only during backward)
    runtime::Tensor grad_shard;      // stages >= 1: this rank's reduced gradients
    runtime::Tensor reduce_out;      // stages 2-3, later micro-batches: added into the shard
    runtime::Tensor wire, wire_out;  // gradients in reduce_dtype while they are reduced
    runtime::Tensor replica_wire;    // HSDP: the shard in replica_reduce_dtype while all-reduced
    std::shared_ptr<comm::Work> gather, reduce, replicate;
    int ready = 0;         // parameters whose gradient is final in this micro-batch
    int span = -1;         // its reduction's entry in comm_spans_ while in flight
    int gather_span = -1;  // its parameter all-gather's entry in comm_spans_ while in flight
    // Options::sparse_embedding's table under ZeRO-1 without HSDP: all-reduced and updated whole
    // on every rank (its optimizer state is not sharded), so the next forward does not wait for
    // its gather.
    bool replicated = false;
    // The earliest place of its parameters in order of first use (BucketsByFirstUse).
    int first_use = std::numeric_limits<int>::max();
  };
  // Where slot i (stages >= 1) lies: its bucket and [lo, hi) in bucket coordinates, and the
  // offset of lo within its parameter.
  struct SlotRange {
    int bucket;
    int64_t lo, hi;
    int64_t in_param;
    Parameter* param;
  };

  DataParallel(comm::Communicator& group, Options options);
  void BuildBuckets(const std::vector<std::vector<Parameter*>>& units);
  void AllocateStorage();
  void BuildSlots();
  // The sum of every rank's `local` over `group`, the same bits on every rank (collective).
  absl::StatusOr<double> SumOverRanks(double local, comm::Communicator& group) const;
  // The minimum of `local` over the group and the model-parallel groups (pp only if `include_pp`).
  absl::StatusOr<int32_t> MinOverRanks(int32_t local, bool include_pp) const;
  // A zeroed flat buffer (storage that is accumulated into or only partly written).
  runtime::Tensor Flat(int64_t numel, runtime::MemoryTag tag,
                       runtime::DType dtype = runtime::DType::kF32) const;
  // A collective's output buffer: from the group's shared arena when it has one and the state
  // lives on the host (so the shm backend's registered all-reduce / all-gather write straight
  // into it), else as Flat.
  runtime::Tensor SharedFlat(int64_t numel, runtime::MemoryTag tag,
                             runtime::DType dtype = runtime::DType::kF32) const;
  runtime::Allocator* SharedOrOwn() const;
  // As Flat / SharedFlat, not zeroed: for per-step buffers whose every element is written next
  // (a conversion's or a collective's output), so the hot path does not clear them first.
  runtime::Tensor Scratch(int64_t numel, runtime::MemoryTag tag,
                          runtime::DType dtype = runtime::DType::kF32) const;
  runtime::Tensor SharedScratch(int64_t numel, runtime::MemoryTag tag,
                                runtime::DType dtype = runtime::DType::kF32) const;
  bool mixed() const { return options_.param_dtype != runtime::DType::kF32; }
  // Whether every rank holds the whole f32 master: stage 0, and f32 stages 1-2 (where the
  // master is the parameter and the updated shards are gathered into it). Otherwise each rank
  // holds only its shard.
  bool master_full() const {
    return options_.zero_stage == 0 || (!mixed() && options_.zero_stage < 3);
  }
  // Whether every rank holds b's whole f32 master (master_full(), or a replicated bucket).
  bool MasterFull(const Bucket& b) const { return master_full() || b.replicated; }
  // Whether b's gradients are all-reduced whole (stage 0, or a replicated bucket) rather than
  // reduce-scattered into shards.
  bool AllReduced(const Bucket& b) const { return options_.zero_stage == 0 || b.replicated; }
  // What b's reduction leaves on this rank: the whole averaged gradient or this rank's shard.
  runtime::Tensor& ReducedGrad(Bucket& b) const { return AllReduced(b) ? b.grad : b.grad_shard; }
  // f32 working values that are the master itself, bound for good (f32, stages 0-2).
  bool values_persistent() const { return !mixed() && options_.zero_stage < 3; }
  // Parameter i of b's view into `flat` (a tensor of the bucket's layout), of its local shape.
  static runtime::Tensor ParamView(const Bucket& b, const runtime::Tensor& flat, size_t i);
  void BindValues(Bucket& b);
  void BindGrads(Bucket& b);
  void OnGradReady(Parameter& p);
  void LaunchReduce(int bucket);
  // Launches, in order, every bucket whose gradients are all final and that has not started.
  void LaunchReady();
  // Waits for every reduction in flight and completes it; the first error.
  absl::Status WaitForReductions();
  void CompleteReduce(Bucket& b);
  // HSDP: starts the all-reduce of b's final shard across replicas / takes its result.
  void StartReplicate(Bucket& b);
  void CompleteReplicate(Bucket& b);
  // Options::sparse_embedding: StartRowExchange agrees on the row count (padding to the
  // largest) and starts the all-gathers of every rank's token ids and gradient rows;
  // FinishRowExchange (after WaitForReductions) waits for them, under HSDP gathers every group's
  // across the replicas, and AddExchangedRows adds them into the reduced gradient.
  struct RowExchange {
    bool started = false;
    runtime::Tensor mine_ids, mine_rows;  // this rank's, sent (kept until the calls complete)
    runtime::Tensor ids, rows;            // every rank's, in rank order
    std::shared_ptr<comm::Work> ids_work, rows_work;
  };
  absl::StatusOr<RowExchange> StartRowExchange();
  absl::Status FinishRowExchange(RowExchange& exchange);
  absl::Status AddExchangedRows(RowExchange& exchange);
  void PollReductions();
  // Ordered issue: completes, in bucket order, the reductions of buckets before `bucket`.
  void CompleteReductionsBefore(int bucket);
  void StartGather(int bucket);
  // Stages 1-2: starts the all-gathers of the updated shards FinishOptimizerStep staged, if due.
  void StartUpdates();
  // Stages 1-2: waits for b's all-gather of the updated shards, if one is in flight.
  absl::Status AwaitUpdate(Bucket& b);
  // Lists the bucket's parameter all-gather, issued now, in comm_spans_.
  void StartGatherSpan(Bucket& b);
  // Waits for b's parameter all-gather, ends its span and clears it; the wait counts in
  // exposed_gather_ms.
  absl::Status WaitGather(Bucket& b);
  void Materialize(Bucket& b);
  void ReleaseValues(Bucket& b);
  // Bucket indices in order of their first use in forward, as the single-rank trainer lists the
  // parameters (the reverse of the bucket order, except for Options::sparse_embedding's table,
  // reduced early but used first).
  std::vector<int> BucketsByFirstUse() const;
  // The unit that uses bucket `b` last in `pass` (highest index forward, lowest backward).
  int LastUse(const Bucket& b, Pass pass) const;

  comm::Communicator& group_;
  Options options_;
  runtime::Allocator* allocator_;
  std::vector<Bucket> buckets_;
  std::vector<std::vector<int>> unit_buckets_;      // the buckets each unit uses
  absl::flat_hash_map<Parameter*, int> bucket_of_;  // each parameter's bucket
  std::vector<optim::ParamSlot> slots_;
  std::vector<SlotRange> slot_ranges_;   // parallel to slots_ (stages >= 1)
  std::vector<Parameter*> slot_params_;  // parallel to slots_: whose piece each slot is
  int pipeline_micro_batches_ = 0;       // BeginPipelineStep's count (0: per micro-batch)
  int fires_needed_ = 1;                 // hook fires that make a gradient final (see above)
  absl::flat_hash_map<Parameter*, int> hook_fires_;  // per parameter, this micro-batch or step
  std::vector<Parameter*> deferred_partials_;        // pipeline: final, not yet summed
  void SumPartial(Parameter& p);
  // Partial gradients being summed (in flight, in backward order; at most until the end of their
  // unit's backward) and taking those that arrived (all of them, waiting, with `wait`): each
  // becomes ready for its own reduction.
  struct PendingPartial {
    Parameter* param = nullptr;
    std::shared_ptr<comm::Work> work;
  };
  std::vector<PendingPartial> pending_partials_;
  void CompletePartials(bool wait);
  void MarkReady(Parameter& p);
  // The group a gradient partial over `axis` is summed over (nullptr if none).
  static comm::Communicator* PartialGroup(const Options& options, const std::string& axis);
  // Whether this rank counts p in the gradient norm (each element of the model once).
  // options_.tp, options_.ep and options_.pp where they have more than one rank.
  std::vector<comm::Communicator*> ModelParallelGroups() const;
  bool CountsInNorm(const Parameter& p) const;
  bool reduce_this_micro_ = true;
  bool first_micro_ = true;     // the step's first micro-batch (stages 2-3 write the shard)
  bool last_micro_ = true;      // the step's last micro-batch (HSDP replicates the shards)
  bool micro_started_ = false;  // a micro-batch of this step has begun
  int next_launch_ = 0;         // buckets launch in index order
  double exposed_reduce_ms_ = 0.0;
  double exposed_gather_ms_ = 0.0;
  int64_t rows_sent_ = 0;
  bool updates_due_ = false;  // stages 1-2: updated shards staged, their all-gathers not started
  std::vector<CommSpan> comm_spans_;
};

}  // namespace loom::parallel
