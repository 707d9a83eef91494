#include "parallel/shard.h"

#include <cstring>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "runtime/base/check.h"
#include "runtime/base/status_macros.h"

namespace loom::parallel {

using runtime::DType;
using runtime::MemoryTag;
using runtime::Shape;
using runtime::Tensor;

ShardSpec ShardSpec::Split(int dim, std::string axis, int index, int count, int parts,
                           int64_t block) {
  ShardSpec s;
  s.kind = Kind::kSplit;
  s.dim = dim;
  s.axis = std::move(axis);
  s.index = index;
  s.count = count;
  s.parts = parts;
  s.block = block;
  return s;
}

ShardSpec ShardSpec::ForIndex(int i) const {
  ShardSpec s = *this;
  s.index = i;
  return s;
}

absl::Status ShardSpec::Check(const std::string& name, const Shape& global) const {
  if (!is_split()) return absl::OkStatus();
  auto bad = [&](auto... parts) {
    return absl::InvalidArgumentError(absl::StrCat(name, " ", ToString(), ": ", parts...));
  };
  if (dim < 0 || dim >= static_cast<int>(global.size())) {
    return bad("dim out of range for a tensor of rank ", global.size());
  }
  if (count < 1 || index < 0 || index >= count || parts < 1 || block < 1) {
    return bad("needs 0 <= index < count, parts >= 1 and block >= 1");
  }
  const int64_t extent = global[dim];
  if (extent % (parts * block) != 0) {
    return bad("extent ", extent, " is not a multiple of parts x block = ", parts * block);
  }
  if (extent / (parts * block) < count) {
    return bad(extent / (parts * block), " blocks per part cannot give each of ", count,
               " ranks one");
  }
  return absl::OkStatus();
}

std::string ShardSpec::ToString() const {
  switch (kind) {
    case Kind::kReplicated:
      return grad_partial() ? absl::StrCat("replicated(grad partial over ",
                                           absl::StrJoin(grad_partial_over, ", "), ")")
                            : "replicated";
    case Kind::kSplit:
      return absl::StrCat("split(dim=", dim, ", axis=", axis, ", ", index, "/", count,
                          parts > 1 ? absl::StrCat(", parts=", parts) : "",
                          block > 1 ? absl::StrCat(", block=", block) : "", ")");
    case Kind::kExpert:
      return absl::StrCat("expert(axis=", axis, ")");
  }
  return "unknown";
}

std::pair<int64_t, int64_t> BalancedRange(int64_t n, int index, int count) {
  const int64_t base = n / count, extra = n % count;
  const int64_t begin = index * base + std::min<int64_t>(index, extra);
  return {begin, begin + base + (index < extra ? 1 : 0)};
}

std::pair<int64_t, int64_t> SplitRange(const Shape& global, const ShardSpec& spec) {
  const int64_t part = global.at(spec.dim) / spec.parts;
  const auto [b, e] = BalancedRange(part / spec.block, spec.index, spec.count);
  return {b * spec.block, e * spec.block};
}

Shape LocalShape(const Shape& global, const ShardSpec& spec) {
  if (!spec.is_split()) return global;
  Shape local = global;
  const auto [begin, end] = SplitRange(global, spec);
  local[spec.dim] = spec.parts * (end - begin);
  return local;
}

void ForEachRun(const Shape& global, const ShardSpec& spec,
                const std::function<void(int64_t, int64_t, int64_t)>& run) {
  if (!spec.is_split()) {
    run(0, 0, runtime::NumElements(global));
    return;
  }
  int64_t outer = 1, inner = 1;
  for (int d = 0; d < spec.dim; ++d) outer *= global[d];
  for (size_t d = spec.dim + 1; d < global.size(); ++d) inner *= global[d];
  const int64_t extent = global[spec.dim], part = extent / spec.parts;
  const auto [begin, end] = SplitRange(global, spec);
  // Pieces that continue the previous one in the global tensor merge into one run.
  int64_t local = 0, run_local = 0, run_global = 0, run_length = 0;
  for (int64_t o = 0; o < outer; ++o) {
    for (int f = 0; f < spec.parts; ++f) {
      const int64_t g = (o * extent + f * part + begin) * inner, n = (end - begin) * inner;
      if (run_length > 0 && run_global + run_length == g) {
        run_length += n;
      } else {
        if (run_length > 0) run(run_local, run_global, run_length);
        run_local = local, run_global = g, run_length = n;
      }
      local += n;
    }
  }
  if (run_length > 0) run(run_local, run_global, run_length);
}

namespace {

// Copies every run of the shard between the whole tensor and the local one (to_local: whole ->
// local).
void CopyRuns(const Tensor& whole, const ShardSpec& spec, const Tensor& local, bool to_local) {
  LOOM_CHECK(whole.dtype() == DType::kF32 && local.dtype() == DType::kF32 &&
             local.shape() == LocalShape(whole.shape(), spec))
      << "shard " << spec.ToString() << ": local " << local.DebugString()
      << " does not match whole " << whole.DebugString();
  float* w = whole.data<float>();
  float* l = local.data<float>();
  ForEachRun(whole.shape(), spec, [&](int64_t at_local, int64_t at_whole, int64_t n) {
    if (to_local) {
      std::memcpy(l + at_local, w + at_whole, n * sizeof(float));
    } else {
      std::memcpy(w + at_whole, l + at_local, n * sizeof(float));
    }
  });
}

}  // namespace

void ExtractShard(const Tensor& whole, const ShardSpec& spec, Tensor& local) {
  CopyRuns(whole, spec, local, /*to_local=*/true);
}

void InsertShard(const Tensor& local, const ShardSpec& spec, Tensor& whole) {
  CopyRuns(whole, spec, local, /*to_local=*/false);
}

absl::StatusOr<Tensor> GatherShards(const Tensor& local, const Shape& global, const ShardSpec& spec,
                                    comm::Communicator& group) {
  // On the host, whether `local` is a host or a device tensor: whole tensors go to files.
  runtime::Allocator* host = &runtime::Allocator::Default();
  Tensor whole = Tensor::Empty(global, DType::kF32, MemoryTag::kWorkspace, host);
  if (!spec.is_split()) {
    whole.CopyFrom(local.Reshape(global));
    return whole;
  }
  LOOM_CHECK(group.size() == spec.count && group.rank() == spec.index)
      << "GatherShards " << spec.ToString() << " over a group of " << group.size()
      << " ranks (this one " << group.rank() << ")";
  // Rank 0 holds the largest shard; every rank sends that many elements (zero-padded).
  const int64_t most = runtime::NumElements(LocalShape(global, spec.ForIndex(0)));
  Tensor mine = Tensor::Zeros({most}, DType::kF32, MemoryTag::kComm, host);
  mine.Slice(0, local.numel()).CopyFrom(local.Reshape({local.numel()}));
  Tensor all = Tensor::Empty({most * group.size()}, DType::kF32, MemoryTag::kComm, host);
  LOOM_RETURN_IF_ERROR(group.AllGather(mine, all)->Wait());
  for (int r = 0; r < group.size(); ++r) {
    const ShardSpec theirs = spec.ForIndex(r);
    const Shape shape = LocalShape(global, theirs);
    InsertShard(all.Slice(r * most, r * most + runtime::NumElements(shape)).Reshape(shape), theirs,
                whole);
  }
  return whole;
}

}  // namespace loom::parallel
