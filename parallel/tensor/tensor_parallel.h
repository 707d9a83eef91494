// Tensor parallelism (Megatron's conjugate pairs) as options of the layers that split.
//
//   // Column-parallel: each rank holds out/tp output columns; the input is whole on every rank,
//   // so backward all-reduces the input gradient (Megatron's f).
//   Linear fc("h.0.mlp.c_fc", C, 4 * C, {.tp = {.split = TpSplit::kColumn, .group = tp}});
//   // Row-parallel: each rank holds in/tp input rows and gets a partial output, all-reduced in
//   // forward (Megatron's g); the bias is replicated and added after the sum.
//   Linear proj("h.0.mlp.c_proj", 4 * C, C, {.tp = {.split = TpSplit::kRow, .group = tp}});
//
// A column-parallel layer followed by a row-parallel one needs no communication between them: the
// pair costs one all-reduce forward and one backward. `parts` and `block` describe fused tensors
// and head-sized splits (parallel/shard.h): GPT-2's c_attn is split with parts 3 and block
// head_dim so each rank holds q, k and v of its heads.
#pragma once

#include <cstdint>
#include <string>

#include "absl/status/status.h"
#include "comm/communicator.h"
#include "parallel/shard.h"
#include "runtime/tensor.h"

namespace loom::parallel {

enum class TpSplit { kNone, kColumn, kRow };

struct TensorParallelOptions {
  TpSplit split = TpSplit::kNone;
  comm::Communicator* group = nullptr;  // the tp group; nullptr (or one rank): no split
  int parts = 1;
  int64_t block = 1;
  // Column-parallel: all-reduce dx in BackwardInput. false: the caller sums the dx of several
  // layers that read the same input (SwiGLU's gate and up) and all-reduces once.
  bool reduce_input_grad = true;

  bool active() const { return split != TpSplit::kNone && group != nullptr && group->size() > 1; }
  // The spec of a tensor split along `dim` over this group (replicated when not active).
  ShardSpec Spec(int dim) const;
};

// Sums `t` (f32) over `group` in place; every rank gets the same bits. A failed collective is fatal
// (a layer cannot go on without its peers' part; the communicator has named the op and ranks).
void AllReduceSumInPlace(comm::Communicator& group, runtime::Tensor& t);

// Splits a tp-sized problem evenly or says what to change: InvalidArgument "tp=4 does not divide
// the 6 heads of cpu-small; choose tp in {1, 2, 3, 6}" unless tp divides `count`.
absl::Status CheckDivides(int tp, int64_t count, const std::string& what, const std::string& model);

}  // namespace loom::parallel
