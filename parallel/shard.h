// ShardSpec: how a parameter's global tensor is laid out across the ranks of a mesh axis, and the
// layout arithmetic everything else derives from (local shape, the local shard's contiguous runs
// in the global tensor, cutting a shard out of a whole tensor and gathering the whole back).
//
//   // GPT-2 c_attn [C, 3C], heads split over tp: each rank holds its heads' q, k and v columns.
//   ShardSpec s = ShardSpec::Split(/*dim=*/1, "tp", tp.rank(), tp.size(), /*parts=*/3,
//                                  /*block=*/head_dim);
//   Shape local = LocalShape({C, 3 * C}, s);           // [C, 3C / tp]
//   ExtractShard(whole, s, mine);                       // a Hugging Face tensor -> this rank's
//   LOOM_ASSIGN_OR_RETURN(Tensor back, GatherShards(mine, {C, 3 * C}, s, tp));  // collective
//
// A split divides dimension `dim` into `parts` equal fused parts (1 for an ordinary tensor) and
// each part into whole blocks of `block` elements (a head's width; 1 for a vocabulary), and gives
// rank i of `count` the blocks [i·n/count ...) of every part, the first n % count ranks one block
// more when n blocks do not divide evenly (GPT-2's 50257-token vocabulary needs no padding). The
// local tensor holds its pieces of the parts one after another along `dim`, so a local c_attn is
// again [q | k | v] for this rank's heads. All tensors f32.
#pragma once

#include <algorithm>
#include <cstdint>
#include <functional>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "comm/communicator.h"
#include "runtime/tensor.h"

namespace loom::parallel {

// The axis of an expert group made of the ep × tp ranks (MoE parallel folding:
// parallel/layers/moe.h MoeOptions::ep_axis): a shard split over it is split over tp and ep.
inline constexpr char kEpTpAxis[] = "ep_tp";

struct ShardSpec {
  enum class Kind { kReplicated, kSplit, kExpert };
  Kind kind = Kind::kReplicated;
  int dim = -1;       // kSplit: the split dimension
  std::string axis;   // kSplit / kExpert: the mesh axis ("tp", "ep")
  int index = 0;      // kSplit: this rank's position along the axis
  int count = 1;      // kSplit: ranks along the axis
  int parts = 1;      // kSplit: fused parts of `dim`, each split alike (c_attn: 3)
  int64_t block = 1;  // kSplit: the split moves whole blocks of this many elements
  // Not empty: each rank's gradient is a partial sum over these axes (a parameter replicated over
  // tp that sees only this rank's tokens under sequence parallelism: norm weights, row-parallel
  // biases, position embeddings; anything but the experts under expert parallelism, "ep"; a tied
  // embedding's copy on a pipeline's first or last stage, "embedding"); data parallelism sums it
  // over each of those groups before reducing.
  std::vector<std::string> grad_partial_over;

  static ShardSpec Replicated() { return {}; }
  bool grad_partial() const { return !grad_partial_over.empty(); }
  bool grad_partial_over_axis(absl::string_view axis) const {
    return std::find(grad_partial_over.begin(), grad_partial_over.end(), axis) !=
           grad_partial_over.end();
  }
  static ShardSpec Split(int dim, std::string axis, int index, int count, int parts = 1,
                         int64_t block = 1);
  bool is_split() const { return kind == Kind::kSplit; }
  // The same split as held by the rank at `index` along the axis.
  ShardSpec ForIndex(int i) const;
  // InvalidArgument naming `name` unless the split fits `global` (dim in range, its extent a
  // multiple of parts × block, at least one block per part for every rank).
  absl::Status Check(const std::string& name, const runtime::Shape& global) const;
  std::string ToString() const;  // "split(dim=1, axis=tp, 0/2, parts=3, block=64)"
};

// [begin, end) of part `index` of `count` balanced parts of n items (the first n % count parts
// one item longer).
std::pair<int64_t, int64_t> BalancedRange(int64_t n, int index, int count);
// [begin, end) along the split dim, within one fused part, of the rank `spec` describes.
std::pair<int64_t, int64_t> SplitRange(const runtime::Shape& global, const ShardSpec& spec);
runtime::Shape LocalShape(const runtime::Shape& global, const ShardSpec& spec);

// Calls run(local_offset, global_offset, length) for every maximal contiguous run of the local
// shard, in row-major order of the local tensor (one run covering everything when replicated).
void ForEachRun(const runtime::Shape& global, const ShardSpec& spec,
                const std::function<void(int64_t, int64_t, int64_t)>& run);

// Copies the shard `spec` describes out of the whole tensor (f32 of the global shape) into
// `local` (f32 of the local shape), and back.
void ExtractShard(const runtime::Tensor& whole, const ShardSpec& spec, runtime::Tensor& local);
void InsertShard(const runtime::Tensor& local, const ShardSpec& spec, runtime::Tensor& whole);

// The whole tensor from every rank's shard: all-gathers them over `group` (whose rank r holds the
// shard of spec.ForIndex(r); collective) and places each. Replicated: a copy of `local`. `local`
// may be a host or a device tensor; the whole one is on the host.
absl::StatusOr<runtime::Tensor> GatherShards(const runtime::Tensor& local,
                                             const runtime::Shape& global, const ShardSpec& spec,
                                             comm::Communicator& group);

}  // namespace loom::parallel
