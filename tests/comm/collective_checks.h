// The collective correctness sweep, written once and run by every backend's test: the local
// backend with 1-8 thread-ranks (comm_local_test) and the MPI-launched backends under
// `mpirun -np 2|3|4` (comm_mpi_test). Inputs are small integers, so every expected value is exact
// in every dtype and is computed from the world size alone: rank r contributes
// (r + 1) · (i % 7 + 1) at element i, so the sum is (i % 7 + 1) · n(n+1)/2, the max
// n · (i % 7 + 1) and the min (i % 7 + 1). Output buffers are poisoned (filled with -77) first.
#pragma once

#include <cstdint>
#include <vector>

#include "comm/communicator.h"

namespace loom::comm::testing {

struct SweepOptions {
  std::vector<int64_t> counts = {0, 1, 7, 257, 4099, 1 << 20};
  int64_t max_count_all_ops = 4099;  // larger counts run sum in every dtype only
  // Where the sweep's buffers come from (e.g. Communicator::shared_allocator()); nullptr: the
  // default allocator.
  runtime::Allocator* allocator = nullptr;
  // Whether a Send completes without its Recv (every host backend; not nccl).
  bool buffered_send = true;
};

// Runs every collective in every dtype on `comm` (each rank of the group calls this with its own
// communicator) and records gtest failures for wrong elements, naming op, dtype, count and rank.
void RunCollectiveSweep(Communicator& comm, const SweepOptions& options = {});

}  // namespace loom::comm::testing
