#include "runtime/parallel.h"

#include <cblas.h>
#include <omp.h>

#include <algorithm>
#include <atomic>
#include <thread>

#include "runtime/base/check.h"
#include "runtime/base/env.h"
#include "runtime/base/logging.h"

namespace loom::runtime {
namespace {

std::atomic<int> g_num_threads{0};  // 0: not initialised yet

}  // namespace

int DefaultNumThreads() {
  const absl::StatusOr<int64_t> env = base::GetEnvInt("LOOM_NUM_THREADS", 0);
  if (!env.ok()) {
    LOOM_LOG(WARNING) << env.status().message() << "; using the core count instead";
  } else if (*env > 0) {
    return static_cast<int>(*env);
  }
  const int cores = std::max(1u, std::thread::hardware_concurrency());
  const int64_t local_ranks = base::GetEnvInt("OMPI_COMM_WORLD_LOCAL_SIZE", 1).value_or(1);
  return std::max<int>(1, cores / static_cast<int>(std::max<int64_t>(1, local_ranks)));
}

int NumThreads() {
  int n = g_num_threads.load(std::memory_order_relaxed);
  if (n == 0) {
    n = DefaultNumThreads();
    SetNumThreads(n);
  }
  return n;
}

void SetNumThreads(int n) {
  LOOM_CHECK_GE(n, 1) << "SetNumThreads";
  g_num_threads.store(n, std::memory_order_relaxed);
  // loom splits GEMMs across its own threads (kernels/cpu/matmul.cc); a second, multi-threaded
  // pool inside OpenBLAS would only compete with them for the same cores. OpenMP's default team
  // (which oneDNN uses when called outside a ParallelFor) is loom's thread count, not the cores.
  openblas_set_num_threads(1);
  omp_set_num_threads(n);
}

void ParallelFor(int64_t n, int64_t grain, absl::FunctionRef<void(int64_t, int64_t)> fn) {
  if (n <= 0) return;
  grain = std::max<int64_t>(1, grain);
  const int64_t max_chunks = (n + grain - 1) / grain;
  const int chunks = static_cast<int>(std::min<int64_t>(NumThreads(), max_chunks));
  if (chunks <= 1 || omp_in_parallel()) {
    fn(0, n);
    return;
  }
#pragma omp parallel for schedule(static, 1) num_threads(chunks)
  for (int c = 0; c < chunks; ++c) {
    fn(n * c / chunks, n * (c + 1) / chunks);
  }
}

}  // namespace loom::runtime
