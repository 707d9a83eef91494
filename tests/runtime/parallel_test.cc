// ParallelFor covers [0, n) exactly once with disjoint chunks for any n, grain and thread count.
#include "runtime/parallel.h"

#include <gtest/gtest.h>

#include <atomic>
#include <cstdlib>
#include <thread>
#include <vector>

namespace loom::runtime {
namespace {

TEST(ParallelTest, CoversRangeExactlyOnce) {
  for (int threads : {1, 2, 3, 8}) {
    SetNumThreads(threads);
    EXPECT_EQ(NumThreads(), threads);
    for (int64_t n : {0, 1, 7, 33, 4099}) {
      for (int64_t grain : {1, 16, 10000}) {
        std::vector<std::atomic<int>> hits(static_cast<size_t>(n));
        std::atomic<int> chunks{0};
        ParallelFor(n, grain, [&](int64_t begin, int64_t end) {
          EXPECT_LT(begin, end);
          chunks.fetch_add(1);
          for (int64_t i = begin; i < end; ++i) hits[i].fetch_add(1);
        });
        for (int64_t i = 0; i < n; ++i) ASSERT_EQ(hits[i].load(), 1) << "n=" << n << " i=" << i;
        EXPECT_LE(chunks.load(), threads);
        if (n > 0) {
          EXPECT_LE(chunks.load(), (n + grain - 1) / grain);
        }
      }
    }
  }
}

TEST(ParallelTest, NestedCallsRunInline) {
  SetNumThreads(2);
  std::atomic<int64_t> total{0};
  std::atomic<int> inner_calls{0}, other_thread{0};
  ParallelFor(4, 1, [&](int64_t begin, int64_t end) {
    const std::thread::id outer = std::this_thread::get_id();
    for (int64_t i = begin; i < end; ++i) {
      // Inline: one chunk covering the whole range, on the calling thread.
      ParallelFor(100, 1, [&](int64_t b, int64_t e) {
        total.fetch_add(e - b);
        inner_calls.fetch_add(1);
        if (std::this_thread::get_id() != outer) other_thread.fetch_add(1);
      });
    }
  });
  EXPECT_EQ(total.load(), 400);
  EXPECT_EQ(inner_calls.load(), 4);
  EXPECT_EQ(other_thread.load(), 0);
}

TEST(ParallelTest, DefaultHonoursEnvironment) {
  setenv("LOOM_NUM_THREADS", "3", 1);
  EXPECT_EQ(DefaultNumThreads(), 3);
  unsetenv("LOOM_NUM_THREADS");
  setenv("OMPI_COMM_WORLD_LOCAL_SIZE", "1000000", 1);
  EXPECT_EQ(DefaultNumThreads(), 1);  // many ranks on one host: at least one thread each
  unsetenv("OMPI_COMM_WORLD_LOCAL_SIZE");
  EXPECT_GE(DefaultNumThreads(), 1);
}

}  // namespace
}  // namespace loom::runtime
