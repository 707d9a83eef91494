#include "parallel/data/data_parallel.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstring>
#include <limits>
#include <tuple>

#include "absl/strings/str_cat.h"
#include "optim/grad_norm.h"
#include "runtime/base/check.h"
#include "runtime/base/clock.h"
#include "runtime/base/status_macros.h"
#include "runtime/dtype.h"
#include "runtime/kernels/elementwise.h"

namespace loom::parallel {

using runtime::MemoryTag;
using runtime::Tensor;

namespace {

// A failed collective inside a model's hook cannot be returned to the caller: the layer about to
// run needs its parameters. The communicator already logged the op, sequence number and ranks.
void CheckOk(const absl::Status& status, const char* what) {
  LOOM_CHECK(status.ok()) << "data parallel " << what << " failed: " << status;
}
void CheckWait(const std::shared_ptr<comm::Work>& work, const char* what) {
  CheckOk(work->Wait(), what);
}

// [lo, hi) ∩ [a, b), or an empty range at lo.
std::pair<int64_t, int64_t> Intersect(int64_t lo, int64_t hi, int64_t a, int64_t b) {
  const int64_t l = std::max(lo, a), h = std::min(hi, b);
  return h > l ? std::make_pair(l, h) : std::make_pair(l, l);
}

runtime::Allocator& Host() { return runtime::Allocator::Default(); }

// Whether `c` queues its calls on a device, where every rank must queue the calls of its
// communicators in one order.
bool QueuesOnDevice(const comm::Communicator* c) {
  return c != nullptr && c->memory() != runtime::Device::kCpu;
}

// `parts`' rows summed per token id, ids ascending, each id's rows added in the order they come;
// rows of id -1 (padding, or tokens another vocabulary shard holds) are left out. A rank sends each
// token's row once, however often the token occurs in its batch.
Parameter::RowGradients CoalescedRows(const std::vector<Parameter::RowGradients>& parts,
                                      int64_t width) {
  std::vector<std::pair<int32_t, const float*>> rows;
  for (const Parameter::RowGradients& part : parts) {
    const int32_t* ids = part.ids.data<int32_t>();
    for (int64_t j = 0; j < part.ids.numel(); ++j) {
      if (ids[j] != -1) rows.emplace_back(ids[j], part.rows.data<float>() + j * width);
    }
  }
  std::stable_sort(rows.begin(), rows.end(),
                   [](const auto& a, const auto& b) { return a.first < b.first; });
  int64_t distinct = 0;
  for (size_t j = 0; j < rows.size(); ++j) distinct += j == 0 || rows[j].first != rows[j - 1].first;
  Parameter::RowGradients out{
      Tensor::Empty({distinct}, runtime::DType::kI32, MemoryTag::kComm, &Host()),
      Tensor::Empty({distinct, width}, runtime::DType::kF32, MemoryTag::kComm, &Host())};
  int64_t at = -1;
  for (size_t j = 0; j < rows.size(); ++j) {
    const auto [id, row] = rows[j];
    const bool first = j == 0 || id != rows[j - 1].first;
    if (first) out.ids.data<int32_t>()[++at] = id;
    float* sum = out.rows.data<float>() + at * width;
    if (first) {
      std::copy(row, row + width, sum);
    } else {
      for (int64_t c = 0; c < width; ++c) sum[c] += row[c];
    }
  }
  return out;
}

// `rows` padded to `most` rows with id -1 (nobody adds them) and zeros: every rank's part of an
// all-gather has the same size.
std::pair<Tensor, Tensor> PaddedRows(const Parameter::RowGradients& rows, int64_t most,
                                     int64_t width) {
  Tensor ids = Tensor::Empty({most}, runtime::DType::kI32, MemoryTag::kComm, &Host());
  Tensor padded = Tensor::Zeros({most, width}, runtime::DType::kF32, MemoryTag::kComm, &Host());
  std::fill(ids.data<int32_t>(), ids.data<int32_t>() + most, -1);
  const int64_t n = rows.ids.numel();
  ids.Slice(0, n).CopyFrom(rows.ids);
  padded.Slice(0, n).CopyFrom(rows.rows);
  return {ids, padded};
}

// Why Options::sparse_embedding's `table` cannot have its gradient split ("" if it can).
std::string SparseEmbeddingProblem(const Parameter& table,
                                   const std::vector<std::vector<Parameter*>>& units,
                                   const DataParallel::Options& options) {
  const bool listed = std::any_of(units.begin(), units.end(), [&](const auto& unit) {
    return std::find(unit.begin(), unit.end(), &table) != unit.end();
  });
  if (!listed) return "it is not one of the model's parameters";
  const ShardSpec& spec = table.shard_spec();
  if ((spec.is_split() && spec.axis != "tp") || spec.grad_partial()) {
    return absl::StrCat("it is ", spec.ToString(),
                        " (pipeline or expert parallelism split or share it)");
  }
  if (table.local_shape().size() != 2) return "it is not a table [V, C]";
  if (table.row_gradients_enabled()) return "another data-parallel engine already takes its rows";
  if (table.uses() < 2) return "it is not tied to an LM head (the lookup must not be its only use)";
  if (options.allocator != nullptr && options.allocator->source().device != runtime::Device::kCpu) {
    return "its gradients live on a device";
  }
  return "";
}

DataParallel::Options WithOrderedIssue(DataParallel::Options o, const comm::Communicator& group) {
  o.ordered_issue = o.ordered_issue || QueuesOnDevice(&group) || QueuesOnDevice(o.replicas);
  return o;
}

}  // namespace

DataParallel::DataParallel(comm::Communicator& group, Options options)
    : group_(group),
      options_(WithOrderedIssue(options, group)),
      allocator_(options.allocator != nullptr ? options.allocator
                                              : &runtime::Allocator::Default()) {}

DataParallel::~DataParallel() {
  for (Bucket& b : buckets_) {
    if (b.reduce != nullptr) (void)b.reduce->Wait();  // buffers must outlive the call
    if (b.replicate != nullptr) (void)b.replicate->Wait();
    if (b.gather != nullptr) (void)b.gather->Wait();
    for (Parameter* p : b.params) p->SetGradReadyHook(nullptr);
  }
  if (Parameter* table = options_.sparse_embedding; table != nullptr) {
    table->EnableRowGradients(false);  // the lookup adds into grad() again
  }
}

absl::StatusOr<std::unique_ptr<DataParallel>> DataParallel::Create(
    std::vector<std::vector<Parameter*>> units, comm::Communicator& group, Options options) {
  if (options.zero_stage < 0 || options.zero_stage > 3) {
    return absl::InvalidArgumentError(
        absl::StrCat("--zero must be 0, 1, 2 or 3, got ", options.zero_stage));
  }
  for (runtime::DType d :
       {options.param_dtype, options.reduce_dtype, options.replica_reduce_dtype}) {
    if (d != runtime::DType::kF32 && d != runtime::DType::kBF16 && d != runtime::DType::kF16) {
      return absl::InvalidArgumentError(absl::StrCat(
          "data parallel: parameter and reduction dtypes must be f32, bf16 or f16, got ", d));
    }
  }
  if (options.replicas != nullptr && options.zero_stage == 0) {
    return absl::InvalidArgumentError(
        "HSDP shards the optimizer state within a group and replicates it across groups: it "
        "needs --zero 1, 2 or 3 (at --zero 0 every rank holds everything; use plain DDP)");
  }
  if (options.bucket_bytes < 4) {
    return absl::InvalidArgumentError(
        absl::StrCat("the gradient bucket size must be >= 4 bytes, got ", options.bucket_bytes));
  }
  for (const auto& unit : units) {
    for (const Parameter* p : unit) {
      for (const std::string& axis : p->shard_spec().grad_partial_over) {
        if (PartialGroup(options, axis) == nullptr) {
          return absl::InvalidArgumentError(
              absl::StrCat(p->name(), ": its gradient is partial over ", axis,
                           "; data parallelism needs that group (Options::tp, ep, ep_tp or "
                           "embedding)"));
        }
      }
      if (p->shard_spec().kind == ShardSpec::Kind::kExpert ||
          (!p->value().defined() && p->initializer() == nullptr)) {
        return absl::InvalidArgumentError(absl::StrCat(
            p->name(),
            ": data parallelism needs replicated or tensor-parallel parameters that are allocated "
            "or have an initializer, got ",
            p->shard_spec().ToString(), p->value().defined() ? "" : " without an initializer"));
      }
    }
  }
  if (Parameter* table = options.sparse_embedding; table != nullptr) {
    const std::string why = SparseEmbeddingProblem(*table, units, options);
    if (!why.empty()) {
      return absl::InvalidArgumentError(absl::StrCat(
          "sparse embedding gradients (--sparse_embedding_grad) need a token embedding tied to the "
          "LM head, replicated or split over tp only, on the host; ",
          table->name(), ": ", why));
    }
  }
  std::unique_ptr<DataParallel> dp(new DataParallel(group, options));
  if (Parameter* table = options.sparse_embedding; table != nullptr) {
    table->EnableRowGradients(true);  // the lookup's use becomes rows, not a contribution
  }
  dp->BuildBuckets(units);
  dp->AllocateStorage();
  dp->BuildSlots();
  return dp;
}

void DataParallel::BuildBuckets(const std::vector<std::vector<Parameter*>>& units) {
  // Parameters in order of first use, with the unit of that use; the sparse embedding table at
  // its last use instead (the LM head's, whose backward makes its dense gradient final).
  std::vector<std::pair<Parameter*, int>> order;
  absl::flat_hash_map<Parameter*, int> first_unit;
  absl::flat_hash_map<Parameter*, int> first_use;  // each parameter's place in order of first use
  for (const auto& unit : units) {
    for (Parameter* p : unit) first_use.emplace(p, static_cast<int>(first_use.size()));
  }
  for (int u = 0; u < static_cast<int>(units.size()); ++u) {
    for (Parameter* p : units[u]) {
      if (p == options_.sparse_embedding) continue;
      if (first_unit.emplace(p, u).second) order.emplace_back(p, u);
    }
    if (Parameter* table = options_.sparse_embedding;
        std::find(units[u].begin(), units[u].end(), table) != units[u].end()) {
      std::erase_if(order, [&](const auto& entry) { return entry.first == table; });
      order.emplace_back(table, u);
    }
  }
  // Backward makes gradients final roughly in reverse order of first use.
  // The sparse embedding's table has a bucket of its own (replicated under ZeRO-1).
  const int64_t max_numel = std::max<int64_t>(1, options_.bucket_bytes / 4);
  int current_unit = -1;
  for (auto it = order.rbegin(); it != order.rend(); ++it) {
    const auto [p, unit] = *it;
    const int64_t n = p->local_numel();
    const bool unit_boundary = options_.zero_stage == 3 && unit != current_unit;
    const bool alone =
        !buckets_.empty() && (p == options_.sparse_embedding ||
                              buckets_.back().params.front() == options_.sparse_embedding);
    if (buckets_.empty() || unit_boundary || alone || buckets_.back().numel + n > max_numel) {
      if (buckets_.empty() || !buckets_.back().params.empty()) buckets_.emplace_back();
    }
    current_unit = unit;
    Bucket& b = buckets_.back();
    bucket_of_[p] = static_cast<int>(buckets_.size()) - 1;
    b.params.push_back(p);
    b.offsets.push_back(b.numel);
    b.numel += n;
    b.first_use = std::min(b.first_use, first_use.at(p));
  }
  if (Parameter* table = options_.sparse_embedding; table != nullptr) {
    // Not under HSDP: there the table's gather runs inside the host, and each rank all-reducing
    // the whole table across hosts would double the bytes on the link.
    buckets_[bucket_of_.at(table)].replicated =
        options_.zero_stage == 1 && options_.replicas == nullptr;
  }
  const int size = group_.size();
  for (Bucket& b : buckets_) b.shard = (b.numel + size - 1) / size;
  unit_buckets_.resize(units.size());
  for (int u = 0; u < static_cast<int>(units.size()); ++u) {
    for (Parameter* p : units[u]) {
      const int bucket = bucket_of_[p];
      std::vector<int>& list = unit_buckets_[u];
      if (std::find(list.begin(), list.end(), bucket) == list.end()) list.push_back(bucket);
      std::vector<int>& users = buckets_[bucket].units;
      if (users.empty() || users.back() != u) users.push_back(u);
    }
  }
}

Tensor DataParallel::Flat(int64_t numel, MemoryTag tag, runtime::DType dtype) const {
  return Tensor::Zeros({numel}, dtype, tag, allocator_);
}

// The group's shared arena (host memory) only where the training state lives on the host.
runtime::Allocator* DataParallel::SharedOrOwn() const {
  runtime::Allocator* shared = group_.shared_allocator();
  const bool on_host = allocator_->source().device == runtime::Device::kCpu;
  return shared != nullptr && on_host ? shared : allocator_;
}

Tensor DataParallel::SharedFlat(int64_t numel, MemoryTag tag, runtime::DType dtype) const {
  return Tensor::Zeros({numel}, dtype, tag, SharedOrOwn());
}

Tensor DataParallel::Scratch(int64_t numel, MemoryTag tag, runtime::DType dtype) const {
  return Tensor::Empty({numel}, dtype, tag, allocator_);
}

Tensor DataParallel::SharedScratch(int64_t numel, MemoryTag tag, runtime::DType dtype) const {
  return Tensor::Empty({numel}, dtype, tag, SharedOrOwn());
}

Tensor DataParallel::ParamView(const Bucket& b, const Tensor& flat, size_t i) {
  const Parameter* p = b.params[i];
  return flat.Slice(b.offsets[i], b.offsets[i] + p->local_numel()).Reshape(p->local_shape());
}

void DataParallel::BindValues(Bucket& b) {
  for (size_t i = 0; i < b.params.size(); ++i) b.params[i]->BindValue(ParamView(b, b.value, i));
}

void DataParallel::BindGrads(Bucket& b) {
  for (size_t i = 0; i < b.params.size(); ++i) b.params[i]->BindGrad(ParamView(b, b.grad, i));
}

void DataParallel::AllocateStorage() {
  const int stage = options_.zero_stage;
  const int64_t rank = group_.rank();
  // Under mixed precision the f32 master is optimizer state; otherwise it is the parameter.
  const MemoryTag master_tag = mixed() ? MemoryTag::kOptimizer : MemoryTag::kParam;
  for (Bucket& b : buckets_) {
    const int64_t padded = b.shard * group_.size();
    const int64_t mine = rank * b.shard;
    // ZeRO-1/2 gather the updated shards into the full master (f32) or working copy (mixed):
    // outputs the peers can write directly when the group has a shared arena.
    const bool gathered_into = (stage == 1 || stage == 2) && !b.replicated;
    const bool full = MasterFull(b);
    b.master = gathered_into && !mixed() ? SharedFlat(padded, master_tag)
                                         : Flat(full ? padded : b.shard, master_tag);
    for (size_t i = 0; i < b.params.size(); ++i) {
      const int64_t off = b.offsets[i], n = b.params[i]->local_numel();
      const auto [lo, hi] =
          full ? std::make_pair(off, off + n) : Intersect(off, off + n, mine, mine + b.shard);
      const int64_t base = full ? 0 : mine;
      if (hi == lo) continue;  // not on this rank
      b.params[i]->InitialValues(lo - off, b.master.Slice(lo - base, hi - base));
    }
    if (mixed()) {  // the working copy: full for stages 0-2, this rank's shard for stage 3
      b.low = gathered_into
                  ? SharedFlat(padded, MemoryTag::kParam, options_.param_dtype)
                  : Flat(stage < 3 ? padded : b.shard, MemoryTag::kParam, options_.param_dtype);
      for (size_t i = 0; i < b.params.size(); ++i) {
        const int64_t off = b.offsets[i], n = b.params[i]->local_numel();
        const auto [lo, hi] = stage < 3 ? std::make_pair(off, off + n)
                                        : Intersect(off, off + n, mine, mine + b.shard);
        const int64_t base = stage < 3 ? 0 : mine;
        if (hi == lo) continue;
        Tensor f32 = Flat(hi - lo, MemoryTag::kWorkspace);
        b.params[i]->InitialValues(lo - off, f32);
        Tensor low = b.low.Slice(lo - base, hi - base);
        runtime::kernels::Convert(f32, low);
      }
    }
    if (values_persistent()) {
      b.value = b.master;
      BindValues(b);
    } else {
      for (Parameter* p : b.params) p->BindValue(Tensor());
    }
    if (stage < 2) {
      // DDP all-reduces it in place: shared when the group has an arena.
      b.grad =
          AllReduced(b) ? SharedFlat(padded, MemoryTag::kGrad) : Flat(padded, MemoryTag::kGrad);
      BindGrads(b);
    } else {
      for (Parameter* p : b.params) p->BindGrad(Tensor());
    }
    if (!AllReduced(b)) b.grad_shard = Flat(b.shard, MemoryTag::kGrad);
    for (Parameter* p : b.params) {
      p->SetGradReadyHook([this](Parameter& ready) { OnGradReady(ready); });
    }
  }
}

void DataParallel::BuildSlots() {
  if (options_.zero_stage == 0) {
    // Every parameter whole (its master value and its gradient), in order of first use, as the
    // single-rank trainer lists them.
    for (int index : BucketsByFirstUse()) {
      const Bucket* b = &buckets_[index];
      for (size_t i = b->params.size(); i-- > 0;) {
        Parameter* p = b->params[i];
        slot_params_.push_back(p);
        slots_.push_back({p->name(), ParamView(*b, b->master, i), p->grad(), p->weight_decay()});
      }
    }
    return;
  }
  const int64_t rank = group_.rank();
  for (Bucket& b : buckets_) {
    const int64_t mine = rank * b.shard;
    for (size_t i = 0; i < b.params.size(); ++i) {
      const int64_t off = b.offsets[i], n = b.params[i]->local_numel();
      if (b.replicated) {  // whole, as at stage 0
        slot_params_.push_back(b.params[i]);
        slots_.push_back({b.params[i]->name(), ParamView(b, b.master, i), ParamView(b, b.grad, i),
                          b.params[i]->weight_decay()});
        slot_ranges_.push_back(
            {static_cast<int>(&b - buckets_.data()), off, off + n, 0, b.params[i]});
        continue;
      }
      const auto [lo, hi] = Intersect(off, off + n, mine, mine + b.shard);
      if (hi == lo) continue;
      Tensor value = master_full() ? b.master.Slice(lo, hi) : b.master.Slice(lo - mine, hi - mine);
      slot_params_.push_back(b.params[i]);
      slots_.push_back({b.params[i]->name(), value, b.grad_shard.Slice(lo - mine, hi - mine),
                        b.params[i]->weight_decay()});
      slot_ranges_.push_back(
          {static_cast<int>(&b - buckets_.data()), lo, hi, lo - off, b.params[i]});
    }
  }
}

std::vector<int> DataParallel::BucketsByFirstUse() const {
  std::vector<int> order(buckets_.size());
  for (int i = 0; i < num_buckets(); ++i) order[i] = i;
  std::sort(order.begin(), order.end(),
            [&](int a, int b) { return buckets_[a].first_use < buckets_[b].first_use; });
  return order;
}

std::vector<int64_t> DataParallel::BucketNumels() const {
  std::vector<int64_t> numels;
  for (const Bucket& b : buckets_) numels.push_back(b.numel);
  return numels;
}

void DataParallel::ZeroGrad() {
  for (Bucket& b : buckets_) {
    for (Parameter* p : b.params) p->ZeroGrad();
    if (b.grad_shard.defined()) b.grad_shard.Fill(0.0f);
  }
  first_micro_ = true;
  micro_started_ = false;
  comm_spans_.clear();
  for (Bucket& b : buckets_) b.gather_span = -1;  // a gather still in flight goes unlisted
  exposed_gather_ms_ = 0.0;
}

void DataParallel::BeginMicroBatch(bool last, int passes) {
  LOOM_CHECK(passes >= 1) << "data parallel: a micro-batch needs >= 1 backward pass";
  // ZeRO-3 releases a unit's parameters after its use: interleaved passes would lose them.
  LOOM_CHECK(passes == 1 || options_.zero_stage <= 2)
      << "data parallel: several passes over a micro-batch need ZeRO stage <= 2";
  pipeline_micro_batches_ = 0;
  fires_needed_ = passes;
  hook_fires_.clear();
  if (micro_started_) {
    if (reduce_this_micro_) LaunchReady();  // without overlap they start only now
    // Stages 2-3 reduce every micro-batch; the next one's buffers replace this one's.
    for (Bucket& b : buckets_) {
      if (b.reduce != nullptr) {
        CheckWait(b.reduce, "gradient reduce-scatter");
        CompleteReduce(b);
      }
    }
    first_micro_ = false;
  }
  micro_started_ = true;
  last_micro_ = last;
  reduce_this_micro_ = last || options_.zero_stage >= 2;
  for (Bucket& b : buckets_) b.ready = 0;
  next_launch_ = 0;
}

comm::Communicator* DataParallel::PartialGroup(const Options& options, const std::string& axis) {
  if (axis == "tp") return options.tp;
  if (axis == "ep") return options.ep;
  if (axis == kEpTpAxis) return options.ep_tp;
  if (axis == "embedding") return options.embedding;
  return nullptr;
}

std::vector<comm::Communicator*> DataParallel::ModelParallelGroups() const {
  std::vector<comm::Communicator*> groups;
  for (comm::Communicator* g : {options_.tp, options_.ep, options_.pp}) {
    if (g != nullptr && g->size() > 1) groups.push_back(g);
  }
  return groups;
}

bool DataParallel::CountsInNorm(const Parameter& p) const {
  const ShardSpec& spec = p.shard_spec();
  // Along tp and ep: a shard split over that axis on every rank, anything else on rank 0 only.
  // A shard split over the ep × tp ranks (kEpTpAxis) is split along both.
  for (const auto& [axis, group] :
       {std::pair<const char*, comm::Communicator*>{"tp", options_.tp}, {"ep", options_.ep}}) {
    const bool split_here = spec.is_split() && (spec.axis == axis || spec.axis == kEpTpAxis);
    if (group != nullptr && group->rank() != 0 && !split_here) return false;
  }
  if (spec.grad_partial_over_axis("embedding") && options_.embedding->rank() != 0) return false;
  return true;
}

void DataParallel::BeginPipelineStep(int micro_batches) {
  LOOM_CHECK(micro_batches >= 1) << "data parallel: a pipeline step needs >= 1 micro-batch";
  BeginMicroBatch(/*last=*/true);
  pipeline_micro_batches_ = micro_batches;
  fires_needed_ = micro_batches;
}

void DataParallel::OnGradReady(Parameter& p) {
  if (!reduce_this_micro_) return;
  // Final after the last pass's contribution (a pipeline step: the step's last micro-batch's, in
  // whatever order they come).
  if (fires_needed_ > 1 && ++hook_fires_[&p] < fires_needed_) return;
  if (p.shard_spec().grad_partial()) {
    // Pipeline: the ranks of the group are at different points of their schedules; summing now
    // could wait for a rank that waits for this one. FinishBackward sums them.
    if (pipeline_micro_batches_ > 0) {
      deferred_partials_.push_back(&p);
      return;
    }
    // Partial over one axis (sequence or expert parallelism): summed while backward goes on; the
    // parameter is ready for its own reduction once the sum has arrived.
    if (p.shard_spec().grad_partial_over.size() == 1) {
      Tensor g = p.grad();
      pending_partials_.push_back({&p, PartialGroup(options_, p.shard_spec().grad_partial_over[0])
                                           ->AllReduce(g, g, comm::ReduceOp::kSum)});
      CompletePartials(/*wait=*/false);
      return;
    }
    SumPartial(p);
  }
  MarkReady(p);
}

void DataParallel::CompletePartials(bool wait) {
  size_t done = 0;
  for (; done < pending_partials_.size(); ++done) {
    auto& [p, work] = pending_partials_[done];
    // Ordered issue: all but the last kIssueLag, whether they are done or not.
    if (!wait &&
        (options_.ordered_issue ? pending_partials_.size() - done <= kIssueLag : !work->Test())) {
      break;
    }
    const absl::Status s = work->Wait();
    LOOM_CHECK(s.ok()) << p->name() << ": summing the partial gradient over "
                       << p->shard_spec().grad_partial_over[0] << " failed: " << s;
    MarkReady(*p);
  }
  pending_partials_.erase(pending_partials_.begin(), pending_partials_.begin() + done);
}

void DataParallel::SumPartial(Parameter& p) {
  // This rank's part of the gradient (its tokens' under sequence parallelism, its copy's of a
  // tied embedding): summed over that group first, in the model's backward order (the same on
  // every rank of it, whatever its buckets), then reduced over data parallelism with the rest.
  Tensor g = p.grad();
  for (const std::string& axis : p.shard_spec().grad_partial_over) {
    const absl::Status s =
        PartialGroup(options_, axis)->AllReduce(g, g, comm::ReduceOp::kSum)->Wait();
    LOOM_CHECK(s.ok()) << p.name() << ": summing the partial gradient over " << axis
                       << " failed: " << s;
  }
}

void DataParallel::MarkReady(Parameter& p) {
  Bucket& b = buckets_[bucket_of_.at(&p)];
  ++b.ready;
  if (options_.overlap) LaunchReady();
}

void DataParallel::LaunchReady() {
  // In bucket order, so every rank issues the same sequence of collectives.
  while (next_launch_ < num_buckets() &&
         buckets_[next_launch_].ready == static_cast<int>(buckets_[next_launch_].params.size())) {
    LaunchReduce(next_launch_++);
  }
}

void DataParallel::LaunchReduce(int bucket) {
  Bucket& b = buckets_[bucket];
  const runtime::DType wire = options_.reduce_dtype;
  // One rank, full gradients in f32: the average over one rank is the gradient itself.
  if (group_.size() == 1 && AllReduced(b) && wire == runtime::DType::kF32) return;
  Tensor* send = &b.grad;
  if (wire != runtime::DType::kF32) {
    b.wire = AllReduced(b) ? SharedScratch(b.grad.numel(), MemoryTag::kComm, wire)
                           : Scratch(b.grad.numel(), MemoryTag::kComm, wire);
    runtime::kernels::Convert(b.grad, b.wire);
    send = &b.wire;
    if (options_.zero_stage >= 2) {  // the bucket is final: its f32 gradient is not needed
      for (Parameter* p : b.params) p->BindGrad(Tensor());
      b.grad = Tensor();
    }
  }
  if (options_.ordered_issue) CompleteReductionsBefore(bucket - static_cast<int>(kIssueLag) + 1);
  b.span = static_cast<int>(comm_spans_.size());
  comm_spans_.push_back({.bucket = bucket, .start_us = runtime::SteadyMicros()});
  if (AllReduced(b)) {
    b.reduce = group_.AllReduce(*send, *send, comm::ReduceOp::kAvg);
    return;
  }
  // Stage 1 and the first micro-batch write the shard; later ones (stages 2-3) add into it.
  Tensor* out = &b.grad_shard;
  if (wire != runtime::DType::kF32) {
    b.wire_out = Scratch(b.shard, MemoryTag::kComm, wire);
    out = &b.wire_out;
  } else if (options_.zero_stage >= 2 && !first_micro_) {
    b.reduce_out = Scratch(b.shard, MemoryTag::kGrad);
    out = &b.reduce_out;
  }
  b.reduce = group_.ReduceScatter(*send, *out, comm::ReduceOp::kAvg);
}

void DataParallel::CompleteReduce(Bucket& b) {
  comm_spans_[b.span].end_us = b.reduce->completed_us();
  b.reduce = nullptr;
  if (b.wire.defined()) {  // widen what came back over the wire
    const bool all = AllReduced(b);
    Tensor& back = all ? b.wire : b.wire_out;
    Tensor* into = &b.grad;
    if (!all) {
      const bool add = options_.zero_stage >= 2 && !first_micro_;
      if (add) b.reduce_out = Scratch(b.shard, MemoryTag::kGrad);
      into = add ? &b.reduce_out : &b.grad_shard;
    }
    runtime::kernels::Convert(back, *into);
    b.wire = Tensor();
    b.wire_out = Tensor();
  }
  if (b.reduce_out.defined()) {
    runtime::kernels::AddInto(b.grad_shard, b.reduce_out);
    b.reduce_out = Tensor();
  }
  if (options_.replicas != nullptr && last_micro_) StartReplicate(b);
  if (options_.zero_stage < 2) return;
  for (Parameter* p : b.params) p->BindGrad(Tensor());
  b.grad = Tensor();
}

void DataParallel::StartReplicate(Bucket& b) {
  const runtime::DType wire = options_.replica_reduce_dtype;
  Tensor* send = &ReducedGrad(b);
  if (wire != runtime::DType::kF32) {
    b.replica_wire = Scratch(send->numel(), MemoryTag::kComm, wire);
    runtime::kernels::Convert(*send, b.replica_wire);
    send = &b.replica_wire;
  }
  b.replicate = options_.replicas->AllReduce(*send, *send, comm::ReduceOp::kAvg);
}

void DataParallel::CompleteReplicate(Bucket& b) {
  b.replicate = nullptr;
  if (!b.replica_wire.defined()) return;
  runtime::kernels::Convert(b.replica_wire, ReducedGrad(b));
  b.replica_wire = Tensor();
}

void DataParallel::CompleteReductionsBefore(int bucket) {
  for (int i = 0; i < bucket && i < num_buckets(); ++i) {
    Bucket& b = buckets_[i];
    if (b.reduce == nullptr) continue;
    CheckWait(b.reduce, "gradient reduction");
    CompleteReduce(b);
  }
}

void DataParallel::PollReductions() {
  for (Bucket& b : buckets_) {
    // Ordered issue: a completed reduction may start the one across replicas, so it is taken
    // only where the program says (CompleteReductionsBefore, FinishBackward).
    if (!options_.ordered_issue && b.reduce != nullptr && b.reduce->Test()) {
      CheckWait(b.reduce, "gradient reduction");
      CompleteReduce(b);
    }
    if (b.replicate != nullptr && b.replicate->Test()) {
      CheckWait(b.replicate, "gradient all-reduce across replicas");
      CompleteReplicate(b);
    }
  }
}

absl::Status DataParallel::FinishBackward() {
  const auto start = std::chrono::steady_clock::now();
  // Pipeline: the partial gradients held back, in name order (the same on every rank).
  std::sort(deferred_partials_.begin(), deferred_partials_.end(),
            [](const Parameter* a, const Parameter* b) { return a->name() < b->name(); });
  for (Parameter* p : deferred_partials_) {
    SumPartial(*p);
    MarkReady(*p);
  }
  deferred_partials_.clear();
  CompletePartials(/*wait=*/true);
  if (reduce_this_micro_) LaunchReady();
  absl::Status status;
  if (reduce_this_micro_ && next_launch_ < num_buckets()) {
    const Bucket& b = buckets_[next_launch_];
    status = absl::FailedPreconditionError(absl::StrCat(
        "data parallel: bucket ", next_launch_, " (first parameter ", b.params.front()->name(),
        ") did not get all its gradients in this backward (", b.ready, " of ", b.params.size(),
        "); every parameter must be used in every micro-batch"));
  }
  absl::StatusOr<RowExchange> rows = RowExchange{};
  if (status.ok() && reduce_this_micro_ && options_.sparse_embedding != nullptr) {
    rows = StartRowExchange();
  }
  // Whatever happened, no reduction stays in flight on buffers the next step reuses.
  status.Update(WaitForReductions());
  if (!rows.ok()) {
    status.Update(rows.status());
  } else if (rows->started) {
    if (status.ok()) {
      status.Update(FinishRowExchange(*rows));
    } else if (rows->rows_work != nullptr) {  // its buffers must outlive the calls
      (void)rows->ids_work->Wait();
      (void)rows->rows_work->Wait();
    }
  }
  exposed_reduce_ms_ =
      std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count();
  return status;
}

absl::Status DataParallel::WaitForReductions() {
  absl::Status status;
  for (Bucket& b : buckets_) {
    if (b.reduce == nullptr) continue;
    status.Update(b.reduce->Wait());
    CompleteReduce(b);  // HSDP: starts the shard's all-reduce across replicas
  }
  for (Bucket& b : buckets_) {
    if (b.replicate == nullptr) continue;
    status.Update(b.replicate->Wait());
    CompleteReplicate(b);
  }
  return status;
}

absl::StatusOr<DataParallel::RowExchange> DataParallel::StartRowExchange() {
  Parameter& table = *options_.sparse_embedding;
  const int64_t width = table.local_shape()[1];
  const Parameter::RowGradients coalesced = CoalescedRows(table.row_gradients(), width);
  const int64_t count = coalesced.ids.numel();
  rows_sent_ = count;
  // The all-gathers take equal parts: every rank pads its rows to the largest count with rows of
  // id -1, which nobody adds (the ranks' batches hold different numbers of distinct tokens).
  Tensor mine = Tensor::FromVector<int64_t>({1}, {count}, MemoryTag::kComm, &Host());
  Tensor counts = Tensor::Empty({group_.size()}, runtime::DType::kI64, MemoryTag::kComm, &Host());
  LOOM_RETURN_IF_ERROR(group_.AllGather(mine, counts)->Wait());
  const int64_t most =
      *std::max_element(counts.data<int64_t>(), counts.data<int64_t>() + group_.size());
  RowExchange x;
  x.started = true;
  if (most == 0) return x;  // HSDP: other groups may still have rows (FinishRowExchange)
  std::tie(x.mine_ids, x.mine_rows) = PaddedRows(coalesced, most, width);
  x.ids = Tensor::Empty({group_.size() * most}, runtime::DType::kI32, MemoryTag::kComm, &Host());
  x.rows =
      Tensor::Empty({group_.size() * most, width}, runtime::DType::kF32, MemoryTag::kComm, &Host());
  x.ids_work = group_.AllGather(x.mine_ids, x.ids);
  x.rows_work = group_.AllGather(x.mine_rows, x.rows);
  return x;
}

absl::Status DataParallel::FinishRowExchange(RowExchange& x) {
  if (x.rows_work != nullptr) {
    absl::Status arrived = x.ids_work->Wait();
    arrived.Update(x.rows_work->Wait());  // both, before any return: they write x's buffers
    LOOM_RETURN_IF_ERROR(arrived);
  }
  const int64_t held = x.ids.defined() ? x.ids.numel() : 0;
  if (options_.replicas != nullptr) {  // HSDP: every group's rows, group after group
    // Called after the step's all-reduces across the replicas were issued (WaitForReductions),
    // so every rank queues these behind the same calls; by every rank, whether its group has
    // rows or not. The group's rows coalesced again (its ranks' batches share tokens), padded to
    // the largest group's count.
    comm::Communicator& across = *options_.replicas;
    const int64_t width = options_.sparse_embedding->local_shape()[1];
    std::vector<Parameter::RowGradients> gathered_rows;
    if (held > 0) gathered_rows.push_back({x.ids, x.rows});
    const Parameter::RowGradients group_rows = CoalescedRows(gathered_rows, width);
    Tensor size =
        Tensor::FromVector<int64_t>({1}, {group_rows.ids.numel()}, MemoryTag::kComm, &Host());
    LOOM_RETURN_IF_ERROR(across.AllReduce(size, size, comm::ReduceOp::kMax)->Wait());
    const int64_t most = size.data<int64_t>()[0];
    if (most == 0) return absl::OkStatus();  // no group has rows of this table
    const auto [padded_ids, padded_rows] = PaddedRows(group_rows, most, width);
    x.ids = Tensor::Empty({across.size() * most}, runtime::DType::kI32, MemoryTag::kComm, &Host());
    x.rows = Tensor::Empty({across.size() * most, width}, runtime::DType::kF32, MemoryTag::kComm,
                           &Host());
    absl::Status gathered = across.AllGather(padded_ids, x.ids)->Wait();
    gathered.Update(across.AllGather(padded_rows, x.rows)->Wait());
    LOOM_RETURN_IF_ERROR(gathered);
  } else if (held == 0) {
    return absl::OkStatus();
  }
  return AddExchangedRows(x);
}

absl::Status DataParallel::AddExchangedRows(RowExchange& x) {
  Parameter& table = *options_.sparse_embedding;
  Bucket& b = buckets_[bucket_of_.at(&table)];
  const size_t i = std::find(b.params.begin(), b.params.end(), &table) - b.params.begin();
  const int64_t vocab = table.local_shape()[0], width = table.local_shape()[1];
  // Stage 0 and a replicated bucket: the whole averaged gradient; otherwise this rank's shard.
  const bool whole = AllReduced(b);
  Tensor target = ReducedGrad(b);
  const int64_t base = whole ? 0 : group_.rank() * b.shard;
  float* out = target.data<float>();
  const int32_t* ids = x.ids.data<int32_t>();
  const float* rows = x.rows.data<float>();
  // The average over every data-parallel rank, as kAvg (HSDP: over the groups too).
  const int replicas = options_.replicas != nullptr ? options_.replicas->size() : 1;
  const float scale = 1.0f / static_cast<float>(group_.size() * replicas);
  for (int64_t j = 0; j < x.ids.numel(); ++j) {
    if (ids[j] == -1) continue;  // padding
    if (ids[j] < 0 || ids[j] >= vocab) {
      return absl::InvalidArgumentError(
          absl::StrCat(table.name(), ": token id ", ids[j], " outside [0, ", vocab, ")"));
    }
    const int64_t start = b.offsets[i] + ids[j] * width;
    const auto [lo, hi] = Intersect(start, start + width, base, base + target.numel());
    const float* row = rows + j * width;
    for (int64_t e = lo; e < hi; ++e) out[e - base] += row[e - start] * scale;
  }
  table.ClearRowGradients();  // the lookup's activations they keep alive can go
  return absl::OkStatus();
}

absl::StatusOr<double> DataParallel::SumOverRanks(double local, comm::Communicator& group) const {
  // Each rank's value travels bit for bit (a double in an i64) and every rank adds them in rank
  // order, so all ranks get the same sum.
  // Host scalars, wherever the model lives.
  Tensor mine = Tensor::Empty({1}, runtime::DType::kI64, MemoryTag::kComm, &Host());
  std::memcpy(mine.data<int64_t>(), &local, sizeof(double));
  Tensor all = Tensor::Empty({group.size()}, runtime::DType::kI64, MemoryTag::kComm, &Host());
  LOOM_RETURN_IF_ERROR(group.AllGather(mine, all)->Wait());
  double total = 0.0;
  for (int r = 0; r < group.size(); ++r) {
    double part;
    std::memcpy(&part, all.data<int64_t>() + r, sizeof(double));
    total += part;
  }
  return total;
}

std::vector<Tensor> DataParallel::Grads() const {
  std::vector<Tensor> grads;
  for (const optim::ParamSlot& s : slots_) grads.push_back(s.grad);
  return grads;
}

absl::StatusOr<double> DataParallel::ClipGradNorm(double max_norm) {
  std::vector<Tensor> grads = Grads();
  const std::vector<comm::Communicator*> model = ModelParallelGroups();
  const bool split_model = !model.empty();
  if (options_.zero_stage == 0 && !split_model) return optim::ClipGradNorm(grads, max_norm);
  // Every element of the model once (CountsInNorm): split parameters on every rank (their
  // shards), replicated ones on one rank of their group.
  std::vector<Tensor> counted;
  for (size_t i = 0; i < grads.size(); ++i) {
    // A replicated bucket's (stages >= 1) is the same on every rank of the group: counted once.
    const bool replicated = options_.zero_stage > 0 && buckets_[slot_ranges_[i].bucket].replicated;
    if (replicated && group_.rank() != 0) continue;
    if (!split_model || CountsInNorm(*slot_params_[i])) counted.push_back(grads[i]);
  }
  double total = 0.0;
  for (double s : runtime::kernels::SumsOfSquares(counted)) total += s;
  if (options_.zero_stage > 0) {
    LOOM_ASSIGN_OR_RETURN(total, SumOverRanks(total, group_));
  }
  for (comm::Communicator* g : model) {  // over tp: the stage's; then over pp: the model's
    LOOM_ASSIGN_OR_RETURN(total, SumOverRanks(total, *g));
  }
  const double norm = std::sqrt(total);
  const double factor = optim::ClipFactor(norm, max_norm);
  if (factor != 1.0) {
    for (Tensor& g : grads) runtime::kernels::Scale(g, static_cast<float>(factor));
  }
  return norm;
}

absl::StatusOr<bool> DataParallel::GradientsFinite() {
  // A non-finite element makes the (double) sum of squares non-finite, and no finite f32 square
  // can overflow it: the threaded kernel answers the same question as a scan.
  int32_t finite = 1;
  for (double s : runtime::kernels::SumsOfSquares(Grads())) finite = finite && std::isfinite(s);
  // Every rank of the job decides alike.
  LOOM_ASSIGN_OR_RETURN(finite, MinOverRanks(finite, /*include_pp=*/true));
  return finite == 1;
}

absl::StatusOr<int32_t> DataParallel::MinOverRanks(int32_t local, bool include_pp) const {
  Tensor value = Tensor::FromVector<int32_t>({1}, {local}, MemoryTag::kComm, &Host());
  LOOM_RETURN_IF_ERROR(group_.AllReduce(value, value, comm::ReduceOp::kMin)->Wait());
  for (comm::Communicator* g : ModelParallelGroups()) {
    if (g == options_.pp && !include_pp) continue;
    LOOM_RETURN_IF_ERROR(g->AllReduce(value, value, comm::ReduceOp::kMin)->Wait());
  }
  return value.data<int32_t>()[0];
}

absl::StatusOr<std::string> DataParallel::FirstNonFiniteGradient() {
  std::vector<Parameter*> order;  // of first use, as BuildSlots lists stage 0's slots
  for (int i : BucketsByFirstUse()) {
    order.insert(order.end(), buckets_[i].params.rbegin(), buckets_[i].params.rend());
  }
  absl::flat_hash_map<const Parameter*, int32_t> ordinal;
  for (const Parameter* p : order) ordinal.emplace(p, static_cast<int32_t>(ordinal.size()));
  int32_t first = std::numeric_limits<int32_t>::max();
  const std::vector<double> sums = runtime::kernels::SumsOfSquares(Grads());
  for (size_t i = 0; i < slots_.size(); ++i) {
    if (!std::isfinite(sums[i])) first = std::min(first, ordinal.at(slot_params_[i]));
  }
  // Not over pp: its stages hold other parameters, so their ordinals mean other things.
  LOOM_ASSIGN_OR_RETURN(first, MinOverRanks(first, /*include_pp=*/false));
  return first == std::numeric_limits<int32_t>::max() ? std::string() : order[first]->name();
}

void DataParallel::ScaleGradients(float factor) {
  for (const optim::ParamSlot& slot : slots_) {
    Tensor g = slot.grad;
    runtime::kernels::Scale(g, factor);
  }
}

absl::Status DataParallel::FinishOptimizerStep() {
  const int stage = options_.zero_stage;
  const runtime::DType work = options_.param_dtype;
  if (stage == 0 || stage == 3) {
    // Every rank updated all it holds: only the working copy needs refreshing.
    for (Bucket& b : buckets_) {
      if (mixed()) runtime::kernels::Convert(b.master, b.low);
    }
    return absl::OkStatus();
  }
  // Stages 1-2: each rank updated its shard of the full master; all-gather the updated shards
  // (in the working dtype) into every rank's working values. The staged input does not alias the
  // output. With overlap_param_gather the gathers start at the next use of a unit (StartUpdates),
  // not here: collectives issued in between (a step's reports, on the same communicator or the
  // same links) would otherwise queue behind them.
  LOOM_RETURN_IF_ERROR(WaitForParameters());  // the previous step's, if nothing used them since
  const int64_t rank = group_.rank();
  for (Bucket& b : buckets_) {
    if (b.replicated) {  // every rank updated all of it
      if (mixed()) runtime::kernels::Convert(b.master, b.low);
      continue;
    }
    b.gather_in = Scratch(b.shard, MemoryTag::kComm, work);
    const int64_t first = master_full() ? rank * b.shard : 0;
    runtime::kernels::Convert(b.master.Slice(first, first + b.shard), b.gather_in);
  }
  updates_due_ = true;
  return options_.overlap_param_gather ? absl::OkStatus() : WaitForParameters();
}

void DataParallel::StartUpdates() {
  if (!updates_due_) return;
  updates_due_ = false;
  // In order of first use: the first units wait least.
  for (int i : BucketsByFirstUse()) {
    Bucket& b = buckets_[i];
    if (b.replicated) continue;
    StartGatherSpan(b);
    b.gather = group_.AllGather(b.gather_in, mixed() ? b.low : b.master);
  }
}

absl::Status DataParallel::WaitForParameters() {
  StartUpdates();
  absl::Status status;
  for (Bucket& b : buckets_) status.Update(AwaitUpdate(b));
  return status;
}

absl::Status DataParallel::AwaitUpdate(Bucket& b) {
  if (options_.zero_stage == 3 || b.gather == nullptr) return absl::OkStatus();
  const absl::Status status = WaitGather(b);
  b.gather_in = Tensor();
  return status;
}

void DataParallel::StartGatherSpan(Bucket& b) {
  b.gather_span = static_cast<int>(comm_spans_.size());
  comm_spans_.push_back({.bucket = static_cast<int>(&b - buckets_.data()),
                         .gather = true,
                         .start_us = runtime::SteadyMicros()});
}

absl::Status DataParallel::WaitGather(Bucket& b) {
  const auto start = std::chrono::steady_clock::now();
  const absl::Status status = b.gather->Wait();
  if (b.gather_span >= 0) comm_spans_[b.gather_span].end_us = b.gather->completed_us();
  b.gather_span = -1;
  b.gather = nullptr;
  exposed_gather_ms_ +=
      std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count();
  return status;
}

void DataParallel::StartGather(int bucket) {
  Bucket& b = buckets_[bucket];
  if (options_.zero_stage != 3 || b.value.defined() || b.gather != nullptr) return;
  b.gathered = SharedScratch(b.shard * group_.size(), MemoryTag::kParam, options_.param_dtype);
  StartGatherSpan(b);
  b.gather = group_.AllGather(mixed() ? b.low : b.master, b.gathered);
}

void DataParallel::Materialize(Bucket& b) {
  if (b.value_is_master) ReleaseValues(b);  // bound to the master by GatherParameters
  if (b.value.defined()) return;
  Tensor source = b.low;
  if (options_.zero_stage == 3) {
    StartGather(static_cast<int>(&b - buckets_.data()));
    CheckOk(WaitGather(b), "parameter all-gather");
    source = std::move(b.gathered);
    b.gathered = Tensor();
  }
  if (mixed()) {
    b.value = Scratch(source.numel(), MemoryTag::kWorkspace);
    runtime::kernels::Convert(source, b.value);
  } else {
    b.value = std::move(source);
  }
  BindValues(b);
  // bf16 working weights: the layers' bf16 GEMMs take these bits as they are.
  if (source.defined() && source.dtype() == runtime::DType::kBF16) {
    for (size_t i = 0; i < b.params.size(); ++i) b.params[i]->BindLowValue(ParamView(b, source, i));
  }
}

void DataParallel::ReleaseValues(Bucket& b) {
  b.value_is_master = false;
  if (values_persistent()) return;
  for (Parameter* p : b.params) {
    p->BindValue(Tensor());
    p->BindLowValue(Tensor());
  }
  b.value = Tensor();
}

absl::Status DataParallel::GatherParameters() {
  // Every gather issued is waited for before returning, even after an error: none may still be
  // writing into a buffer this engine frees.
  absl::Status status = WaitForParameters();
  std::vector<std::shared_ptr<comm::Work>> works(buckets_.size());
  for (size_t i = 0; i < buckets_.size(); ++i) {
    Bucket& b = buckets_[i];
    if (b.gather != nullptr) status.Update(b.gather->Wait());  // a prefetch in flight
    b.gather = nullptr;
    b.gathered = Tensor();
    ReleaseValues(b);
    if (MasterFull(b)) {
      b.value = b.master;
    } else {
      b.value = SharedScratch(b.shard * group_.size(), MemoryTag::kParam);
      works[i] = group_.AllGather(b.master, b.value);
    }
  }
  for (size_t i = 0; i < buckets_.size(); ++i) {
    if (works[i] != nullptr) status.Update(works[i]->Wait());
  }
  for (Bucket& b : buckets_) {
    if (status.ok()) {
      BindValues(b);
      b.value_is_master = true;
    } else {
      ReleaseValues(b);
    }
  }
  return status;
}

void DataParallel::ReleaseParameters() {
  for (Bucket& b : buckets_) {
    if (b.value_is_master) ReleaseValues(b);
  }
}

int DataParallel::LastUse(const Bucket& b, Pass pass) const {
  return pass == Pass::kForward ? b.units.back() : b.units.front();
}

void DataParallel::BeforeUse(int unit, Pass pass) {
  PollReductions();
  StartUpdates();
  for (int bucket : unit_buckets_[unit]) StartGather(bucket);
  const int next = pass == Pass::kForward ? unit + 1 : unit - 1;
  if (next >= 0 && next < static_cast<int>(unit_buckets_.size())) {
    for (int bucket : unit_buckets_[next]) StartGather(bucket);  // prefetch (stage 3)
  }
  for (int bucket : unit_buckets_[unit]) {
    CheckOk(AwaitUpdate(buckets_[bucket]), "parameter all-gather");  // overlap_param_gather
    Materialize(buckets_[bucket]);
  }
  if (options_.zero_stage >= 2 && pass == Pass::kBackward) {
    for (int bucket : unit_buckets_[unit]) {
      Bucket& b = buckets_[bucket];
      // Already reduced in this micro-batch (the sparse embedding's table, whose lookup adds no
      // dense gradient): no storage for gradients nobody writes.
      if (b.grad.defined() || b.ready == static_cast<int>(b.params.size())) continue;
      b.grad = Flat(b.shard * group_.size(), MemoryTag::kGrad);
      BindGrads(b);
    }
  }
}

void DataParallel::AfterUse(int unit, Pass pass) {
  // A unit's partial sums finish before the next unit's backward (they overlap the rest of this
  // unit's): ZeRO-3 rebinds storage between units.
  if (pass == Pass::kBackward) CompletePartials(/*wait=*/true);
  for (int bucket : unit_buckets_[unit]) {
    Bucket& b = buckets_[bucket];
    if (LastUse(b, pass) == unit) ReleaseValues(b);
  }
}

}  // namespace loom::parallel
