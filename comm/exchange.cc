#include "comm/exchange.h"

#include <algorithm>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "comm/reduce.h"

namespace loom::comm {

namespace {

int64_t StagedElements(const CollectiveArgs& a, int size) {
  switch (a.fp.op) {
    case CollectiveOp::kAllReduce:
    case CollectiveOp::kAllGather:
    case CollectiveOp::kBroadcast:
      return a.fp.count;
    case CollectiveOp::kReduceScatter:
    case CollectiveOp::kAllToAll:
      return a.fp.count * size;
    case CollectiveOp::kAllToAllV:
      return a.fp.count;  // Σ send_counts
    default:
      return 0;
  }
}

}  // namespace

std::vector<char> StageInput(const CollectiveArgs& args, int size) {
  const size_t es = runtime::DTypeSize(args.fp.dtype);
  const size_t data = static_cast<size_t>(StagedElements(args, size)) * es;
  std::vector<char> out;
  if (args.fp.op == CollectiveOp::kAllToAllV) {
    const size_t header = args.send_counts.size() * sizeof(int64_t);
    out.resize(header + data);
    std::memcpy(out.data(), args.send_counts.data(), header);
    if (data > 0) std::memcpy(out.data() + header, args.in, data);
    return out;
  }
  if (args.in == nullptr || data == 0) return out;
  out.assign(static_cast<const char*>(args.in), static_cast<const char*>(args.in) + data);
  return out;
}

absl::Status ComputeOutput(const CollectiveArgs& args, int rank, int size,
                           const std::vector<const char*>& staged) {
  const Fingerprint& fp = args.fp;
  const size_t es = runtime::DTypeSize(fp.dtype);
  char* out = static_cast<char*>(args.out);
  const size_t block = static_cast<size_t>(fp.count) * es;
  switch (fp.op) {
    case CollectiveOp::kAllReduce:
    case CollectiveOp::kReduceScatter: {
      if (fp.count == 0) return absl::OkStatus();
      const size_t offset = fp.op == CollectiveOp::kReduceScatter ? rank * block : 0;
      std::vector<const void*> inputs(static_cast<size_t>(size));
      for (int r = 0; r < size; ++r) inputs[r] = staged[r] + offset;
      ReduceBuffers(fp.dtype, fp.reduce, inputs.data(), size, out, fp.count, size);
      return absl::OkStatus();
    }
    case CollectiveOp::kAllGather:
      for (int r = 0; r < size && block > 0; ++r) std::memcpy(out + r * block, staged[r], block);
      return absl::OkStatus();
    case CollectiveOp::kAllToAll:
      for (int r = 0; r < size && block > 0; ++r) {
        std::memcpy(out + r * block, staged[r] + rank * block, block);
      }
      return absl::OkStatus();
    case CollectiveOp::kAllToAllV: {
      size_t written = 0;
      for (int r = 0; r < size; ++r) {
        const int64_t* counts = reinterpret_cast<const int64_t*>(staged[r]);
        int64_t before = 0;
        for (int k = 0; k < rank; ++k) before += counts[k];
        if (counts[rank] != args.recv_counts[r]) {
          return absl::InvalidArgumentError(absl::StrCat(
              "rank ", r, " sends ", counts[rank], " elements to rank ", rank, " but rank ", rank,
              " expects ", args.recv_counts[r], " (recv_counts[", r, "])"));
        }
        const char* data = staged[r] + size * sizeof(int64_t) + before * es;
        const size_t bytes = static_cast<size_t>(counts[rank]) * es;
        if (bytes > 0) std::memcpy(out + written, data, bytes);
        written += bytes;
      }
      return absl::OkStatus();
    }
    case CollectiveOp::kBroadcast:
      if (rank != fp.root && block > 0) std::memcpy(out, staged[fp.root], block);
      return absl::OkStatus();
    default:
      return absl::OkStatus();  // Barrier
  }
}

SplitPlan PlanSplit(const std::vector<int64_t>& color_key, int rank) {
  const int n = static_cast<int>(color_key.size() / 2);
  const int64_t color = color_key[2 * rank];
  SplitPlan plan{0, -1, {}};
  for (int r = 0; r < n; ++r) {
    if (color_key[2 * r] == color) plan.members.push_back(r);
  }
  std::stable_sort(plan.members.begin(), plan.members.end(),
                   [&](int a, int b) { return color_key[2 * a + 1] < color_key[2 * b + 1]; });
  plan.size = static_cast<int>(plan.members.size());
  plan.rank = static_cast<int>(std::find(plan.members.begin(), plan.members.end(), rank) -
                               plan.members.begin());
  return plan;
}

absl::StatusOr<SplitPlan> ExchangeSplitPlan(
    int color, int key, int rank, int size,
    absl::FunctionRef<absl::Status(const CollectiveArgs&)> all_gather) {
  const int64_t mine[2] = {color, key};
  std::vector<int64_t> all(2 * static_cast<size_t>(size));
  CollectiveArgs gather;
  gather.fp = {CollectiveOp::kAllGather, runtime::DType::kI64, 2};
  gather.in = mine;
  gather.out = all.data();
  const absl::Status s = all_gather(gather);
  if (!s.ok()) return s;
  return PlanSplit(all, rank);
}

}  // namespace loom::comm
