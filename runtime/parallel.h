// Intra-op parallelism: a per-process thread count and a ParallelFor over index ranges.
//
//   runtime::SetNumThreads(4);                      // loom's threads; OpenBLAS runs
//   single-threaded runtime::ParallelFor(rows, /*grain=*/16, [&](int64_t begin, int64_t end) {
//     for (int64_t r = begin; r < end; ++r) NormalizeRow(r);
//   });
//
// The default thread count is LOOM_NUM_THREADS if set, otherwise the host's cores divided by the
// ranks sharing the host (OMPI_COMM_WORLD_LOCAL_SIZE under mpirun), at least 1. The split of
// [0, n) into chunks depends only on n, grain and the thread count, so kernels that write each
// output from one chunk are deterministic for a given thread count.
#pragma once

#include <cstdint>

#include "absl/functional/function_ref.h"

namespace loom::runtime {

int NumThreads();
// n >= 1. Applies to this process (all threads). Also pins OpenBLAS to one thread: loom's GEMM
// wrapper splits each product across loom's own threads instead.
void SetNumThreads(int n);
// What NumThreads() is before any SetNumThreads call (see above).
int DefaultNumThreads();

// Calls fn(begin, end) on disjoint chunks covering [0, n), each at least `grain` long (except when
// n < grain), in parallel on up to NumThreads() threads. Returns when all chunks are done. Runs
// inline when one chunk suffices. Must not be nested (inner calls run serially).
void ParallelFor(int64_t n, int64_t grain, absl::FunctionRef<void(int64_t, int64_t)> fn);

}  // namespace loom::runtime
