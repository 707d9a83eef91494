// The CUDA kernels' grid arithmetic (runtime/kernels/cuda/launch.h), on the host: a launch shape
// and its grid-stride loop visit every element exactly once, for sizes around the block and at
// the block cap, where the loop has to go round more than once.
#include "runtime/kernels/cuda/launch.h"

#include <gtest/gtest.h>

#include <vector>

namespace loom::runtime::kernels::cuda {
namespace {

TEST(CudaGrid, NothingToLaunchForNoElements) {
  EXPECT_EQ(GridFor(0).blocks, 0);
  EXPECT_EQ(GridFor(-5).blocks, 0);
}

TEST(CudaGrid, OneThreadPerElementUpToTheCap) {
  EXPECT_EQ(GridFor(1).blocks, 1);
  EXPECT_EQ(GridFor(1).threads, kBlock);
  EXPECT_EQ(GridFor(kBlock).blocks, 1);
  EXPECT_EQ(GridFor(kBlock + 1).blocks, 2);
  EXPECT_EQ(GridFor(kMaxBlocks * kBlock).blocks, kMaxBlocks);
  EXPECT_EQ(GridFor(kMaxBlocks * kBlock + 1).blocks, kMaxBlocks);
  EXPECT_EQ(GridFor(int64_t{1} << 40).blocks, kMaxBlocks);  // no overflow in the division
  EXPECT_EQ(GridFor(1000, 128).blocks, 8);
}

// Runs the grid-stride loop of every thread of GridFor(n) on the host and counts the visits.
std::vector<int> Visits(int64_t n) {
  std::vector<int> visits(static_cast<size_t>(n), 0);
  const Grid g = GridFor(n);
  for (int64_t block = 0; block < g.blocks; ++block) {
    for (int64_t thread = 0; thread < g.threads; ++thread) {
      for (int64_t i = FirstIndex(block, g.threads, thread); i < n;
           i += Stride(g.blocks, g.threads)) {
        ++visits[static_cast<size_t>(i)];
      }
    }
  }
  return visits;
}

TEST(CudaGrid, GridStrideLoopVisitsEveryElementOnce) {
  for (int64_t n : {int64_t{1}, int64_t{255}, int64_t{256}, int64_t{257}, int64_t{10007},
                    kMaxBlocks * kBlock, kMaxBlocks * kBlock * 2 + 3}) {
    const std::vector<int> visits = Visits(n);
    int64_t wrong = 0;
    for (int v : visits) wrong += v != 1;
    EXPECT_EQ(wrong, 0) << "n " << n;
  }
}

}  // namespace
}  // namespace loom::runtime::kernels::cuda
