// DataParallel's checkpoint side: optimizer state in one layout-independent format (every
// parameter's state whole), gathered from and cut back to this rank's ZeRO shards.
#include "absl/container/flat_hash_map.h"
#include "absl/strings/str_cat.h"
#include "parallel/data/data_parallel.h"
#include "runtime/base/status_macros.h"

namespace loom::parallel {

using runtime::MemoryTag;
using runtime::Tensor;

namespace {

Tensor HostFlat(int64_t numel) {
  return Tensor::Zeros({numel}, runtime::DType::kF32, MemoryTag::kComm,
                       &runtime::Allocator::Default());
}

}  // namespace

absl::StatusOr<std::vector<optim::NamedTensor>> DataParallel::GatherOptimizerState(
    const std::vector<optim::NamedTensor>& local, const std::vector<std::string>& suffixes) {
  if (options_.zero_stage == 0) return local;
  absl::flat_hash_map<std::string, const Tensor*> by_name;
  for (const optim::NamedTensor& t : local) by_name[t.name] = &t.tensor;
  // Every rank checks its own pieces, then all agree before any gather (a rank whose shard holds
  // only padding has nothing to check and must not run ahead into a gather the others skip).
  std::string problem;
  for (const SlotRange& r : slot_ranges_) {
    for (const std::string& suffix : suffixes) {
      const std::string name = r.param->name() + suffix;
      const auto it = by_name.find(name);
      if (problem.empty() && (it == by_name.end() || it->second->numel() != r.hi - r.lo)) {
        problem = absl::StrCat("optimizer state '", name, "' is missing or not of rank ",
                               group_.rank(), "'s shard size ", r.hi - r.lo);
      }
    }
  }
  Tensor complete = Tensor::FromVector<int32_t>({1}, {problem.empty() ? 1 : 0}, MemoryTag::kComm);
  LOOM_RETURN_IF_ERROR(group_.AllReduce(complete, complete, comm::ReduceOp::kMin)->Wait());
  if (complete.data<int32_t>()[0] == 0) {
    return absl::FailedPreconditionError(
        absl::StrCat("cannot gather the optimizer state: ",
                     problem.empty() ? "another rank's is incomplete" : problem,
                     " (checkpoints need the state of at least one optimizer step)"));
  }
  const int64_t mine = group_.rank();
  std::vector<optim::NamedTensor> whole;
  for (const std::string& suffix : suffixes) {
    // This rank's pieces (host or device) into per-bucket shards on the host, then all-gathered
    // into whole buckets: a checkpoint's state goes to a file.
    // A replicated bucket's state is whole on every rank already.
    std::vector<Tensor> shards, full;
    for (const Bucket& b : buckets_) shards.push_back(HostFlat(b.replicated ? b.numel : b.shard));
    for (const SlotRange& r : slot_ranges_) {
      const Bucket& b = buckets_[r.bucket];
      const int64_t at = b.replicated ? r.lo : r.lo - mine * b.shard;
      shards[r.bucket]
          .Slice(at, at + (r.hi - r.lo))
          .CopyFrom(*by_name.at(r.param->name() + suffix));
    }
    std::vector<std::shared_ptr<comm::Work>> works;
    for (size_t i = 0; i < buckets_.size(); ++i) {
      if (buckets_[i].replicated) {
        full.push_back(shards[i]);
        continue;
      }
      full.push_back(HostFlat(buckets_[i].shard * group_.size()));
      works.push_back(group_.AllGather(shards[i], full.back()));
    }
    absl::Status status;  // every gather is waited for before the buffers go
    for (auto& w : works) status.Update(w->Wait());
    if (!status.ok()) return status;
    for (size_t i = 0; i < buckets_.size(); ++i) {
      const Bucket& b = buckets_[i];
      for (size_t j = 0; j < b.params.size(); ++j) {
        const int64_t n = b.params[j]->local_numel();
        whole.push_back(
            {b.params[j]->name() + suffix, full[i].Slice(b.offsets[j], b.offsets[j] + n).Clone()});
      }
    }
  }
  return whole;
}

absl::StatusOr<std::vector<optim::NamedTensor>> DataParallel::ShardOptimizerState(
    const std::vector<optim::NamedTensor>& whole, const std::vector<std::string>& suffixes) const {
  if (options_.zero_stage == 0) return whole;
  absl::flat_hash_map<std::string, const Tensor*> by_name;
  for (const optim::NamedTensor& t : whole) by_name[t.name] = &t.tensor;
  std::vector<optim::NamedTensor> pieces;
  for (const SlotRange& r : slot_ranges_) {
    for (const std::string& suffix : suffixes) {
      const std::string name = r.param->name() + suffix;
      const auto it = by_name.find(name);
      const int64_t n = r.param->local_numel();
      if (it == by_name.end() || it->second->numel() != n || it->second->rank() != 1) {
        return absl::InvalidArgumentError(absl::StrCat(
            "optimizer state '", name, "' is missing or not a flat tensor of ", n, " elements"));
      }
      pieces.push_back({name, it->second->Slice(r.in_param, r.in_param + (r.hi - r.lo))});
    }
  }
  return pieces;
}

}  // namespace loom::parallel
