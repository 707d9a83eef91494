#include "comm/hierarchical.h"

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <map>
#include <vector>

#include "absl/strings/str_cat.h"
#include "comm/algorithms/common.h"
#include "comm/reduce.h"
#include "runtime/base/check.h"
#include "runtime/base/status_macros.h"

namespace loom::comm {

using runtime::DType;

namespace {

class HierarchicalBackend : public Backend {
 public:
  HierarchicalBackend(std::unique_ptr<Backend> flat, int host, std::unique_ptr<Backend> intra,
                      std::unique_ptr<Backend> inter)
      : flat_(std::move(flat)), host_(host), intra_(std::move(intra)), inter_(std::move(inter)) {}

  int rank() const override { return flat_->rank(); }
  int size() const override { return flat_->size(); }
  std::string name() const override {
    const bool own_intra = intra_ != nullptr && intra_->name() != flat_->name();
    return absl::StrCat("hierarchical(", flat_->name(),
                        own_intra ? absl::StrCat("; inside hosts: ", intra_->name()) : "", ")");
  }

  absl::Status Run(const CollectiveArgs& args, Deadline deadline) override {
    if (args.fp.op == CollectiveOp::kAllReduce && intra_ != nullptr) {
      // Counted once on the flat backend, whose ranks are ours, so a timeout in any stage names
      // the rank that is missing rather than a member of a stage's group.
      const uint64_t call = flat_->EnterCollective();
      const absl::Status s = ComposedAllReduce(args, deadline);
      return s.ok() ? s : NameMissingRanks(s, flat_->MissingRanks(call));
    }
    return flat_->Run(args, deadline);
  }

  absl::StatusOr<std::unique_ptr<Backend>> Split(int color, int key, Deadline deadline) override {
    LOOM_ASSIGN_OR_RETURN(std::unique_ptr<Backend> child, flat_->Split(color, key, deadline));
    return MakeHierarchicalBackend(std::move(child), host_, deadline);
  }

  [[noreturn]] void Abort(int exit_code) override {
    flat_->Abort(exit_code);
    std::abort();  // unreachable; the attribute does not carry through the virtual call
  }

 private:
  absl::Status ComposedAllReduce(const CollectiveArgs& args, Deadline deadline) {
    const Fingerprint& fp = args.fp;
    const DType dtype = fp.dtype, acc = AccumDType(dtype, fp.reduce);
    const ReduceOp inner = HopOp(fp.reduce);  // avg sums in every stage and divides once
    const int64_t local = intra_->size();
    const int64_t block = (fp.count + local - 1) / local, padded = block * local;
    // Straight from `in` to `out` when no widening or padding is needed; else a staged copy.
    const bool direct = acc == dtype && padded == fp.count;
    Scratch staged_store, mine_store;
    char* const staged = direct ? nullptr : staged_store.Get(Bytes(acc, padded));
    const void* scatter_in = args.in;
    void* result = args.out;
    if (!direct) {
      ConvertElements(args.in, dtype, staged, acc, fp.count);
      // The padding only ever reduces into padding, which is dropped; zero keeps it finite.
      if (padded > fp.count) {
        std::memset(staged + Bytes(acc, fp.count), 0, Bytes(acc, padded - fp.count));
      }
      scatter_in = result = staged;
    }
    char* const mine = mine_store.Get(Bytes(acc, block));
    CollectiveArgs stage;
    stage.seq = args.seq;
    stage.fp = {CollectiveOp::kReduceScatter, acc, block, inner};
    stage.in = scatter_in;
    stage.out = mine;
    LOOM_RETURN_IF_ERROR(intra_->Run(stage, deadline));
    stage.fp = {CollectiveOp::kAllReduce, acc, block, inner};
    stage.in = mine;
    LOOM_RETURN_IF_ERROR(inter_->Run(stage, deadline));
    stage.fp = {CollectiveOp::kAllGather, acc, block};
    stage.out = result;
    LOOM_RETURN_IF_ERROR(intra_->Run(stage, deadline));
    if (fp.reduce == ReduceOp::kAvg && fp.count > 0) {
      const void* sum[1] = {result};
      ReduceBuffers(acc, ReduceOp::kAvg, sum, 1, result, fp.count, size());
    }
    if (!direct) ConvertElements(staged, acc, args.out, dtype, fp.count);
    return absl::OkStatus();
  }

  std::unique_ptr<Backend> flat_;
  const int host_;
  std::unique_ptr<Backend> intra_;  // null when AllReduce runs flat
  std::unique_ptr<Backend> inter_;
};

}  // namespace

absl::StatusOr<std::unique_ptr<Backend>> MakeHierarchicalBackend(
    std::unique_ptr<Backend> flat, int host, Deadline deadline,
    const IntraHostFactory& make_intra) {
  LOOM_CHECK(flat != nullptr) << "MakeHierarchicalBackend: no flat backend";
  const int n = flat->size(), rank = flat->rank();
  std::vector<int64_t> hosts(static_cast<size_t>(n));
  const int64_t mine = host;
  CollectiveArgs gather;
  gather.fp = {CollectiveOp::kAllGather, DType::kI64, 1};
  gather.in = &mine;
  gather.out = hosts.data();
  LOOM_RETURN_IF_ERROR(flat->Run(gather, deadline));
  std::map<int64_t, int> ranks_on;
  int local_rank = 0;
  for (int r = 0; r < n; ++r) {
    if (r < rank && hosts[r] == host) ++local_rank;
    ++ranks_on[hosts[r]];
  }
  const int local = ranks_on[host];
  const bool uniform = std::all_of(ranks_on.begin(), ranks_on.end(),
                                   [&](const auto& entry) { return entry.second == local; });
  // Every rank sees the same host table, so all take the same branch (the splits are collective).
  if (!uniform || ranks_on.size() == 1 || local == 1) {
    return std::unique_ptr<Backend>(
        new HierarchicalBackend(std::move(flat), host, nullptr, nullptr));
  }
  std::unique_ptr<Backend> intra;
  if (make_intra != nullptr) {
    LOOM_ASSIGN_OR_RETURN(intra, make_intra(host));
  } else {
    LOOM_ASSIGN_OR_RETURN(intra, flat->Split(host, rank, deadline));
  }
  LOOM_ASSIGN_OR_RETURN(std::unique_ptr<Backend> inter, flat->Split(local_rank, rank, deadline));
  return std::unique_ptr<Backend>(
      new HierarchicalBackend(std::move(flat), host, std::move(intra), std::move(inter)));
}

}  // namespace loom::comm
