#include "parallel/tensor/tensor_parallel.h"

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "runtime/base/check.h"

namespace loom::parallel {

using runtime::MemoryTag;
using runtime::Shape;
using runtime::Tensor;

ShardSpec TensorParallelOptions::Spec(int dim) const {
  if (!active()) return ShardSpec::Replicated();
  return ShardSpec::Split(dim, "tp", group->rank(), group->size(), parts, block);
}

TensorParallelOptions TensorParallelOptions::As(TpSplit s, int fused_parts,
                                                int64_t split_block) const {
  TensorParallelOptions o = *this;
  o.split = s;
  o.parts = fused_parts;
  o.block = split_block;
  o.reduce_input_grad = true;
  return o;
}

namespace {

void Check(const absl::Status& s, const char* what) {
  LOOM_CHECK(s.ok()) << "tensor-parallel " << what << " failed: " << s;
}

// `t` as [rows, last dim].
Tensor Rows(const Tensor& t) { return t.Reshape({-1, t.dim(-1)}); }

Tensor AllReduced(comm::Communicator& group, Tensor t) {
  Check(group.AllReduce(t, t, comm::ReduceOp::kSum)->Wait(), "all-reduce");
  return t;
}

Tensor GatherTokens(comm::Communicator& group, const Tensor& local) {
  const Tensor rows = Rows(local);
  Tensor full = Tensor::Empty({rows.dim(0) * group.size(), rows.dim(1)}, local.dtype(),
                              MemoryTag::kActivation);
  Check(group.AllGather(rows, full)->Wait(), "all-gather of the tokens");
  return full;
}

Tensor ReduceScatterTokens(comm::Communicator& group, const Tensor& full) {
  const Tensor rows = Rows(full);
  LOOM_CHECK_EQ(rows.dim(0) % group.size(), 0)
      << "sequence parallelism: " << rows.dim(0) << " tokens do not split over " << group.size()
      << " ranks";
  Tensor mine = Tensor::Empty({rows.dim(0) / group.size(), rows.dim(1)}, full.dtype(),
                              MemoryTag::kActivation);
  Check(group.ReduceScatter(rows, mine, comm::ReduceOp::kSum)->Wait(),
        "reduce-scatter of the tokens");
  return mine;
}

}  // namespace

Tensor ColumnInput(const TensorParallelOptions& tp, const Tensor& x) {
  return tp.sp() ? GatherTokens(*tp.group, x) : x;
}

Tensor ReduceColumnInputGrad(const TensorParallelOptions& tp, Tensor dx, const Shape& local_shape) {
  if (!tp.active()) return dx.Reshape(local_shape);
  if (tp.sp()) return ReduceScatterTokens(*tp.group, dx).Reshape(local_shape);
  return AllReduced(*tp.group, std::move(dx)).Reshape(local_shape);
}

Tensor ReduceRowOutput(const TensorParallelOptions& tp, Tensor y) {
  if (!tp.active()) return y;
  if (tp.sp()) return ReduceScatterTokens(*tp.group, y);
  return AllReduced(*tp.group, std::move(y));
}

Tensor RowOutputGrad(const TensorParallelOptions& tp, const Tensor& dy) {
  return tp.sp() ? GatherTokens(*tp.group, dy) : dy;
}

int64_t FirstTokenRow(const TensorParallelOptions& tp, int64_t local_rows) {
  return tp.sp() ? tp.group->rank() * local_rows : 0;
}

absl::Status CheckDivides(int tp, int64_t count, const std::string& what,
                          const std::string& model) {
  if (count % tp == 0) return absl::OkStatus();
  std::vector<int64_t> choices;
  for (int64_t d = 1; d <= count; ++d) {
    if (count % d == 0) choices.push_back(d);
  }
  return absl::InvalidArgumentError(absl::StrCat("tp=", tp, " does not divide the ", count, " ",
                                                 what, " of ", model, "; choose tp in {",
                                                 absl::StrJoin(choices, ", "), "}"));
}

}  // namespace loom::parallel
