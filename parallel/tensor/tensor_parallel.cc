#include "parallel/tensor/tensor_parallel.h"

#include <algorithm>
#include <chrono>
#include <memory>
#include <vector>

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

// Waits for `work`, adding the time to tp.stats. A failed collective is fatal.
void WaitFor(const TensorParallelOptions& tp, const std::shared_ptr<comm::Work>& work,
             const char* what) {
  const auto start = std::chrono::steady_clock::now();
  const absl::Status s = work->Wait();
  if (tp.stats != nullptr) {
    tp.stats->wait_ms +=
        std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count();
  }
  LOOM_CHECK(s.ok()) << "tensor-parallel " << what << " failed: " << s;
}

// `t` as [rows, last dim].
Tensor Rows(const Tensor& t) { return t.Reshape({-1, t.dim(-1)}); }

Tensor AllReduced(const TensorParallelOptions& tp, Tensor t) {
  if (tp.active()) WaitFor(tp, tp.group->AllReduce(t, t, comm::ReduceOp::kSum), "all-reduce");
  return t;
}

Tensor ReduceScatterTokens(const TensorParallelOptions& tp, const Tensor& full) {
  const Tensor rows = Rows(full);
  const int size = tp.group->size();
  LOOM_CHECK_EQ(rows.dim(0) % size, 0) << "sequence parallelism: " << rows.dim(0)
                                       << " tokens do not split over " << size << " ranks";
  Tensor mine =
      Tensor::Empty({rows.dim(0) / size, rows.dim(1)}, full.dtype(), MemoryTag::kActivation);
  WaitFor(tp, tp.group->ReduceScatter(rows, mine, comm::ReduceOp::kSum),
          "reduce-scatter of the tokens");
  return mine;
}

// [begin, end) of chunk i of n rows cut into tp.chunks (at most n) balanced chunks.
std::vector<std::pair<int64_t, int64_t>> Chunks(const TensorParallelOptions& tp, int64_t n) {
  const int k = static_cast<int>(std::max<int64_t>(1, std::min<int64_t>(tp.chunks, n)));
  std::vector<std::pair<int64_t, int64_t>> chunks;
  for (int i = 0; i < k; ++i) chunks.push_back(BalancedRange(n, i, k));
  return chunks;
}

bool Chunked(const TensorParallelOptions& tp) { return tp.active() && tp.chunks > 1; }

}  // namespace

Tensor GatherTokens(const TensorParallelOptions& tp, const Tensor& local) {
  const Tensor rows = Rows(local);
  Tensor full = Tensor::Empty({rows.dim(0) * tp.group->size(), rows.dim(1)}, local.dtype(),
                              MemoryTag::kActivation);
  WaitFor(tp, tp.group->AllGather(rows, full), "all-gather of the tokens");
  return full;
}

void AllReduceTp(const TensorParallelOptions& tp, Tensor& t, comm::ReduceOp op) {
  if (tp.active()) WaitFor(tp, tp.group->AllReduce(t, t, op), "all-reduce");
}

Tensor ColumnInput(const TensorParallelOptions& tp, const Tensor& x) {
  return tp.sp() ? GatherTokens(tp, x) : x;
}

Tensor ReduceColumnInputGrad(const TensorParallelOptions& tp, Tensor dx, const Shape& local_shape) {
  if (!tp.active()) return dx.Reshape(local_shape);
  if (tp.sp()) return ReduceScatterTokens(tp, dx).Reshape(local_shape);
  return AllReduced(tp, std::move(dx)).Reshape(local_shape);
}

Tensor ReduceRowOutput(const TensorParallelOptions& tp, Tensor y) {
  if (!tp.active()) return y;
  if (tp.sp()) return ReduceScatterTokens(tp, y);
  return AllReduced(tp, std::move(y));
}

Tensor RowOutputGrad(const TensorParallelOptions& tp, const Tensor& dy) {
  return tp.sp() ? GatherTokens(tp, dy) : dy;
}

Tensor GatherMatmul(const TensorParallelOptions& tp, const Tensor& local, int64_t out_cols,
                    const RowGemm& gemm, Tensor* gathered) {
  if (!(Chunked(tp) && tp.sp())) {
    const Tensor in = ColumnInput(tp, local);
    Shape shape = in.shape();
    shape.back() = out_cols;
    Tensor y = Tensor::Empty(shape, runtime::DType::kF32, MemoryTag::kActivation);
    gemm(in, y);
    if (gathered != nullptr) *gathered = in;
    return y;
  }
  // Chunk i of every rank arrives as one [size · c_i, K] block (rank-major); its rank-r rows are
  // tokens r·n + [b_i, e_i) of the whole, so each GEMM writes a contiguous block of y.
  const Tensor rows = Rows(local);
  const int64_t n = rows.dim(0), k = rows.dim(1);
  const int size = tp.group->size();
  Tensor y = Tensor::Empty({size * n, out_cols}, runtime::DType::kF32, MemoryTag::kActivation);
  if (gathered != nullptr) {
    *gathered = Tensor::Empty({size * n, k}, local.dtype(), MemoryTag::kActivation);
  }
  const auto chunks = Chunks(tp, n);
  std::vector<Tensor> recv;
  std::vector<std::shared_ptr<comm::Work>> works;
  for (const auto& [b, e] : chunks) {
    recv.push_back(Tensor::Empty({size * (e - b), k}, local.dtype(), MemoryTag::kActivation));
    works.push_back(tp.group->AllGather(rows.Slice(b, e), recv.back()));
    if (!tp.overlap) WaitFor(tp, works.back(), "all-gather of the tokens");
  }
  for (size_t i = 0; i < chunks.size(); ++i) {
    const auto [b, e] = chunks[i];
    if (tp.overlap) WaitFor(tp, works[i], "all-gather of the tokens");
    for (int r = 0; r < size; ++r) {
      const Tensor in = recv[i].Slice(r * (e - b), (r + 1) * (e - b));
      Tensor out = y.Slice(r * n + b, r * n + e);
      gemm(in, out);
      if (gathered != nullptr) {
        gathered->Slice(r * n + b, r * n + e).CopyFrom(in);  // host or device
      }
    }
  }
  return y;
}

Tensor MatmulReduce(const TensorParallelOptions& tp, const Tensor& in, int64_t out_cols,
                    const RowGemm& gemm) {
  if (!Chunked(tp)) {
    Shape shape = in.shape();
    shape.back() = out_cols;
    Tensor y = Tensor::Empty(shape, runtime::DType::kF32, MemoryTag::kActivation);
    gemm(in, y);
    return ReduceRowOutput(tp, std::move(y));
  }
  const Tensor rows = Rows(in);
  const int size = tp.group->size();
  std::vector<std::shared_ptr<comm::Work>> works;
  if (!tp.sp()) {  // chunks of rows, each all-reduced in place while the next is multiplied
    Shape shape = in.shape();
    shape.back() = out_cols;
    Tensor y = Tensor::Empty(shape, runtime::DType::kF32, MemoryTag::kActivation);
    const Tensor y_rows = Rows(y);
    for (const auto& [b, e] : Chunks(tp, rows.dim(0))) {
      Tensor out = y_rows.Slice(b, e);
      gemm(rows.Slice(b, e), out);
      works.push_back(tp.group->AllReduce(out, out, comm::ReduceOp::kSum));
      if (!tp.overlap) WaitFor(tp, works.back(), "all-reduce");
    }
    if (tp.overlap) {
      for (const auto& w : works) WaitFor(tp, w, "all-reduce");
    }
    return y;
  }
  // SP: chunk i of this rank's result sums chunk i of every rank's token block: its GEMMs fill a
  // [size · c_i, N] block (rank-major) that is reduce-scattered into rows [b_i, e_i) of y.
  LOOM_CHECK_EQ(rows.dim(0) % size, 0) << "sequence parallelism: " << rows.dim(0)
                                       << " tokens do not split over " << size << " ranks";
  const int64_t n = rows.dim(0) / size;
  Tensor y = Tensor::Empty({n, out_cols}, runtime::DType::kF32, MemoryTag::kActivation);
  std::vector<Tensor> send;
  for (const auto& [b, e] : Chunks(tp, n)) {
    send.push_back(
        Tensor::Empty({size * (e - b), out_cols}, runtime::DType::kF32, MemoryTag::kActivation));
    for (int r = 0; r < size; ++r) {
      Tensor out = send.back().Slice(r * (e - b), (r + 1) * (e - b));
      gemm(rows.Slice(r * n + b, r * n + e), out);
    }
    Tensor mine = y.Slice(b, e);
    works.push_back(tp.group->ReduceScatter(send.back(), mine, comm::ReduceOp::kSum));
    if (!tp.overlap) WaitFor(tp, works.back(), "reduce-scatter of the tokens");
  }
  if (tp.overlap) {
    for (const auto& w : works) WaitFor(tp, w, "reduce-scatter of the tokens");
  }
  return y;
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
