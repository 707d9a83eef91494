// Collective semantics as "stage my input, then compute my output from everyone's staged input".
// Backends that can see all ranks' data at once (local threads; shared-memory one-shot paths)
// implement every collective with these two functions, so the meaning of each op is written once.
//
//   std::vector<char> mine = StageInput(args, size);        // publish to the other ranks
//   ... wait until every rank has published ...
//   LOOM_RETURN_IF_ERROR(ComputeOutput(args, rank, size, all_staged));
#pragma once

#include <cstdint>
#include <vector>

#include "absl/functional/function_ref.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "comm/backend.h"

namespace loom::comm {

// The bytes this rank contributes to `args` (AllToAllV prefixes its send counts).
std::vector<char> StageInput(const CollectiveArgs& args, int size);

// Writes this rank's result into args.out from `staged[r]`, the bytes rank r staged for the same
// call. Reductions combine ranks in order 0..size-1. InvalidArgument if AllToAllV counts disagree.
absl::Status ComputeOutput(const CollectiveArgs& args, int rank, int size,
                           const std::vector<const char*>& staged);

// Given every rank's (color, key) as 2·size int64 values, the size of `rank`'s new group and its
// rank there (members ordered by key, then old rank).
struct SplitPlan {
  int size;
  int rank;
  std::vector<int> members;  // old ranks, in new-rank order
};
SplitPlan PlanSplit(const std::vector<int64_t>& color_key, int rank);

// Every backend's Split starts here: gathers each rank's (color, key) with `all_gather` (run on the
// given args, a 2-element i64 AllGather over this group, bounded by the caller's deadline) and
// plans the split for `rank`.
absl::StatusOr<SplitPlan> ExchangeSplitPlan(
    int color, int key, int rank, int size,
    absl::FunctionRef<absl::Status(const CollectiveArgs&)> all_gather);

}  // namespace loom::comm
