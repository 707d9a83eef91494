// Tensor parallelism (Megatron's conjugate pairs) and sequence parallelism, as options of the
// layers that split.
//
//   TensorParallelOptions tp{.group = tp_group, .sequence_parallel = true};
//   // Column-parallel: each rank holds out/tp output columns of the weight; its input is the
//   // whole activation.
//   Linear fc("h.0.mlp.c_fc", C, 4 * C, {.tp = tp.As(TpSplit::kColumn)});
//   // Row-parallel: each rank holds in/tp input rows and computes a partial output; the bias is
//   // replicated and added after the sum.
//   Linear proj("h.0.mlp.c_proj", 4 * C, C, {.tp = tp.As(TpSplit::kRow)});
//
// A column-parallel layer followed by a row-parallel one needs no communication between them.
// The collectives sit at the region's edges (the four functions below):
//
//                     forward                         backward
//   column input      identity | all-gather tokens    all-reduce dx | reduce-scatter dx tokens
//   row output        all-reduce | reduce-scatter     identity | all-gather dy tokens
//
// (without | with sequence parallelism). Sequence parallelism shards the activations between the
// regions (norms, residual adds, bias adds, position embeddings) along the tokens: an activation
// [B, T, C] is read as B·T token rows of C, and rank r of tp holds rows [r·N/tp, (r+1)·N/tp) of
// them as a [N/tp, C] tensor. That block is a view of the leading dimension of the whole, so
// gathering and scattering move one contiguous block per rank, and every op between the regions
// is per token (positions come from the row index: (r·N/tp + i) mod T). N = B·T must divide by
// tp (train_gpt requires T % tp == 0).
//
// Overlap ("async TP"): with `chunks` > 1, a GEMM next to a collective is cut into chunks of
// token rows that pipeline with the collective's chunks. GatherMatmul issues the all-gather of
// every chunk at once and multiplies each as soon as it has arrived; MatmulReduce multiplies a
// chunk and starts its reduce-scatter (all-reduce without SP) while it multiplies the next. The
// collectives are asynchronous on the tp communicator, so this works for any backend, also tp
// groups that span hosts (`hier`). `overlap` false keeps the same chunks and waits for each
// collective before going on: the same arithmetic, bit for bit, as the measurement baseline.
// TpStats (optional) adds up the time spent waiting for tp collectives.
//
// `parts` and `block` describe fused tensors and head-sized splits (parallel/shard.h): GPT-2's
// c_attn is split with parts 3 and block head_dim so each rank holds q, k and v of its heads.
#pragma once

#include <cstdint>
#include <functional>
#include <string>

#include "absl/status/status.h"
#include "comm/communicator.h"
#include "parallel/shard.h"
#include "runtime/tensor.h"

namespace loom::parallel {

enum class TpSplit { kNone, kColumn, kRow };

// Time spent waiting for tensor-parallel collectives (what the GEMMs did not hide).
struct TpStats {
  double wait_ms = 0.0;
};

struct TensorParallelOptions {
  TpSplit split = TpSplit::kNone;
  comm::Communicator* group = nullptr;  // the tp group; nullptr (or one rank): no split
  int parts = 1;
  int64_t block = 1;
  // Column-parallel: reduce dx in BackwardInput. false: the caller sums the dx of several layers
  // that read the same input (SwiGLU's gate and up) and reduces once (ReduceColumnInputGrad).
  bool reduce_input_grad = true;
  bool sequence_parallel = false;
  int chunks = 1;            // > 1: GEMMs next to collectives run in this many token-row chunks
  bool overlap = true;       // with chunks > 1: pipeline them with the collectives (false: wait)
  TpStats* stats = nullptr;  // not owned; nullptr: not measured

  bool active() const { return group != nullptr && group->size() > 1; }
  bool sp() const { return active() && sequence_parallel; }
  // The spec of a tensor split along `dim` over this group (replicated when not active).
  ShardSpec Spec(int dim) const;
  // These options (group, sequence parallelism) for a layer with another split.
  TensorParallelOptions As(TpSplit s, int fused_parts = 1, int64_t split_block = 1) const;
};

// The conjugate collectives at the edges of a tensor-parallel region, on `tp`'s group (identity
// when it is not active). Inputs may have any leading dims; gathered or scattered results are
// [rows, last dim]. A failed collective is fatal: a layer cannot go on without its peers' part,
// and the communicator has named the op and ranks.
//   The whole input of a column-parallel GEMM: x itself, or the tokens of every rank (SP).
runtime::Tensor ColumnInput(const TensorParallelOptions& tp, const runtime::Tensor& x);
//   Its dx (each rank's covers its columns only): summed over tp, and under SP scattered back to
//   this rank's tokens, shaped `local_shape` (the shape of x as the layer got it).
runtime::Tensor ReduceColumnInputGrad(const TensorParallelOptions& tp, runtime::Tensor dx,
                                      const runtime::Shape& local_shape);
//   A row-parallel GEMM's partial output summed over tp (and under SP scattered to this rank's
//   tokens).
runtime::Tensor ReduceRowOutput(const TensorParallelOptions& tp, runtime::Tensor y);
//   Its output gradient for the whole token range: dy itself, or gathered from every rank (SP).
runtime::Tensor RowOutputGrad(const TensorParallelOptions& tp, const runtime::Tensor& dy);

// Every rank's token rows of `local` (any leading dims) in rank order, [tp·rows, last dim]:
// sequence parallelism's all-gather (tp active).
runtime::Tensor GatherTokens(const TensorParallelOptions& tp, const runtime::Tensor& local);

// Reduces `t` in place over tp's group with `op` (waiting counts in tp.stats); identity when not
// active.
void AllReduceTp(const TensorParallelOptions& tp, runtime::Tensor& t, comm::ReduceOp op);

// A GEMM over rows: writes out_rows ([m, N]) from in_rows ([m, K]); called on row blocks.
using RowGemm = std::function<void(const runtime::Tensor& in_rows, runtime::Tensor& out_rows)>;

// gemm over every rank's token rows of `local` ([n, K] under SP; otherwise x itself, any leading
// dims): the column-parallel forward and the row-parallel input gradient. Returns [tp·n, N] (SP)
// or x's leading dims with N; `gathered`, when given, receives the whole gathered input.
runtime::Tensor GatherMatmul(const TensorParallelOptions& tp, const runtime::Tensor& local,
                             int64_t out_cols, const RowGemm& gemm,
                             runtime::Tensor* gathered = nullptr);
// gemm over the rows of `in` summed over tp: the row-parallel forward and the column-parallel
// input gradient. SP: `in` holds every rank's token rows ([tp·n, K]) and the result is this
// rank's [n, N]; otherwise the all-reduced [..., N] with in's leading dims.
runtime::Tensor MatmulReduce(const TensorParallelOptions& tp, const runtime::Tensor& in,
                             int64_t out_cols, const RowGemm& gemm);

// The first token row this rank holds under sequence parallelism, of `local_rows` per rank.
int64_t FirstTokenRow(const TensorParallelOptions& tp, int64_t local_rows);

// InvalidArgument "tp=4 does not divide the 6 heads of cpu-small; choose tp in {1, 2, 3, 6}"
// unless tp divides `count`.
absl::Status CheckDivides(int tp, int64_t count, const std::string& what, const std::string& model);

}  // namespace loom::parallel
