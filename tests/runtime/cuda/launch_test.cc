// The CUDA kernels' grid arithmetic (runtime/kernels/cuda/launch.h), on the host: a launch shape
// and its grid-stride loop visit every element exactly once, for sizes around the block and at
// the block cap, where the loop has to go round more than once; the row-major to column-major
// GEMM mapping of the cuBLASLt twin; and the multi-tensor launches' tables.
#include "runtime/kernels/cuda/launch.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <tuple>
#include <vector>

#include "runtime/kernels/cuda/gemm_layout.h"
#include "runtime/kernels/cuda/multi_tensor.h"

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
// The row-major -> column-major GEMM mapping (gemm_layout.h), run through a naive column-major
// GEMM as BLAS defines it, on the row-major buffers: every shape and transposition gives the
// row-major product, exactly (small integers).
TEST(ColumnMajorGemm, ARowMajorProductIsOneColumnMajorCallOnTheSameBuffers) {
  for (const auto& [m, n, k] : {std::tuple{3, 5, 4}, std::tuple{1, 7, 2}, std::tuple{6, 1, 3}}) {
    for (bool trans_a : {false, true}) {
      for (bool trans_b : {false, true}) {
        // Row-major a: [m, k] or [k, m]; b: [k, n] or [n, k]; op(a)(i, p) and op(b)(p, j).
        std::vector<float> a(m * k), b(k * n);
        for (size_t i = 0; i < a.size(); ++i) a[i] = static_cast<float>(i % 7) - 3.0f;
        for (size_t i = 0; i < b.size(); ++i) b[i] = static_cast<float>(i % 5) - 2.0f;
        auto op_a = [&](int i, int p) { return trans_a ? a[p * m + i] : a[i * k + p]; };
        auto op_b = [&](int p, int j) { return trans_b ? b[j * k + p] : b[p * n + j]; };
        std::vector<float> want(m * n, 0.0f);
        for (int i = 0; i < m; ++i) {
          for (int j = 0; j < n; ++j) {
            for (int p = 0; p < k; ++p) want[i * n + j] += op_a(i, p) * op_b(p, j);
          }
        }
        const ColumnMajorGemm g = ToColumnMajor(m, n, k, trans_a, trans_b);
        EXPECT_EQ(g.rows_a * g.cols_a, static_cast<int64_t>(b.size()));
        EXPECT_EQ(g.rows_b * g.cols_b, static_cast<int64_t>(a.size()));
        // BLAS: C[i + j·ldc] = Σ_p opA(i, p) · opB(p, j), A = b's buffer, B = a's, ld = rows.
        auto blas_a = [&](int64_t i, int64_t p) {
          return g.trans_a ? b[p + i * g.rows_a] : b[i + p * g.rows_a];
        };
        auto blas_b = [&](int64_t p, int64_t j) {
          return g.trans_b ? a[j + p * g.rows_b] : a[p + j * g.rows_b];
        };
        std::vector<float> c(g.rows_c * g.cols_c, 0.0f);
        for (int64_t i = 0; i < g.m; ++i) {
          for (int64_t j = 0; j < g.n; ++j) {
            for (int64_t p = 0; p < g.k; ++p) c[i + j * g.rows_c] += blas_a(i, p) * blas_b(p, j);
          }
        }
        EXPECT_EQ(c, want) << m << "x" << n << "x" << k << " trans_a " << trans_a << " trans_b "
                           << trans_b;
      }
    }
  }
}

// The same with row strides wider than the rows and a batch of products at strides (as batched
// attention reads heads out of the fused qkv): the mapped call, through a naive column-major
// batched GEMM with leading dimensions, gives every product, and leaves the padding alone.
TEST(ColumnMajorGemm, StridedAndBatchedProductsMapToo) {
  constexpr int64_t kBatch = 3, kPad = 2, kGap = 5;
  for (const auto& [m, n, k] : {std::tuple{3, 5, 4}, std::tuple{1, 7, 2}, std::tuple{6, 1, 3}}) {
    for (bool trans_a : {false, true}) {
      for (bool trans_b : {false, true}) {
        RowMajorGemm r{.m = m, .n = n, .k = k, .trans_a = trans_a, .trans_b = trans_b};
        const int64_t a_rows = trans_a ? k : m, a_cols = trans_a ? m : k;
        const int64_t b_rows = trans_b ? n : k, b_cols = trans_b ? k : n;
        r.lda = a_cols + kPad;
        r.ldb = b_cols + kPad + 1;
        r.ldc = n + kPad;
        r.stride_a = a_rows * r.lda + kGap;
        r.stride_b = b_rows * r.ldb + kGap;
        r.stride_out = m * r.ldc + kGap;
        std::vector<float> a(kBatch * r.stride_a), b(kBatch * r.stride_b);
        for (size_t i = 0; i < a.size(); ++i) a[i] = static_cast<float>(i % 7) - 3.0f;
        for (size_t i = 0; i < b.size(); ++i) b[i] = static_cast<float>(i % 5) - 2.0f;
        constexpr float kUntouched = -99.0f;
        std::vector<float> want(kBatch * r.stride_out, kUntouched);
        for (int64_t x = 0; x < kBatch; ++x) {
          auto op_a = [&](int64_t i, int64_t p) {
            return a[x * r.stride_a + (trans_a ? p * r.lda + i : i * r.lda + p)];
          };
          auto op_b = [&](int64_t p, int64_t j) {
            return b[x * r.stride_b + (trans_b ? j * r.ldb + p : p * r.ldb + j)];
          };
          for (int64_t i = 0; i < m; ++i) {
            for (int64_t j = 0; j < n; ++j) {
              float sum = 0.0f;
              for (int64_t p = 0; p < k; ++p) sum += op_a(i, p) * op_b(p, j);
              want[x * r.stride_out + i * r.ldc + j] = sum;
            }
          }
        }
        const ColumnMajorGemm g = ToColumnMajor(r);
        std::vector<float> c(want.size(), kUntouched);
        for (int64_t x = 0; x < kBatch; ++x) {
          // BLAS with leading dimensions: A = b's buffer, B = a's, batch strides swapped alike.
          auto blas_a = [&](int64_t i, int64_t p) {
            return b[x * g.stride_a + (g.trans_a ? p + i * g.ld_a : i + p * g.ld_a)];
          };
          auto blas_b = [&](int64_t p, int64_t j) {
            return a[x * g.stride_b + (g.trans_b ? j + p * g.ld_b : p + j * g.ld_b)];
          };
          for (int64_t i = 0; i < g.m; ++i) {
            for (int64_t j = 0; j < g.n; ++j) {
              float sum = 0.0f;
              for (int64_t p = 0; p < g.k; ++p) sum += blas_a(i, p) * blas_b(p, j);
              c[x * g.stride_c + i + j * g.ld_c] = sum;
            }
          }
        }
        EXPECT_EQ(c, want) << m << "x" << n << "x" << k << " trans_a " << trans_a << " trans_b "
                           << trans_b;
      }
    }
  }
}

// Multi-tensor launches: every element of every tensor is in exactly one block's chunk, each
// launch within its tables' limits, its tensors in list order, and no launch empty; with the
// limits small enough that tensors split between launches and launches fill by either limit.
TEST(MultiTensorLaunches, EveryElementOnceWithinTheLimits) {
  const std::vector<int64_t> sizes = {0, 1, 7, 8, 9, 0, 40, 3, 16, 17, 1, 1, 1, 1, 25, 0};
  for (const auto& [chunk, max_tensors, max_chunks] :
       {std::tuple{8, 3, 4}, std::tuple{8, 36, 256}, std::tuple{1, 2, 5}, std::tuple{64, 1, 1}}) {
    const std::vector<MultiTensorLaunch> launches =
        PlanMultiTensorLaunches(sizes, chunk, max_tensors, max_chunks);
    std::vector<std::vector<int>> visits;
    for (int64_t n : sizes) visits.emplace_back(static_cast<size_t>(n), 0);
    int last_tensor = -1;
    for (const MultiTensorLaunch& l : launches) {
      ASSERT_FALSE(l.chunks.empty());
      EXPECT_LE(static_cast<int>(l.tensors.size()), max_tensors);
      EXPECT_LE(static_cast<int>(l.chunks.size()), max_chunks);
      for (int t : l.tensors) {
        EXPECT_GE(t, last_tensor);  // a tensor split between launches appears in both
        last_tensor = t;
      }
      for (const MultiTensorLaunch::Chunk& c : l.chunks) {
        ASSERT_GE(c.slot, 0);
        ASSERT_LT(c.slot, static_cast<int>(l.tensors.size()));
        const size_t t = static_cast<size_t>(l.tensors[static_cast<size_t>(c.slot)]);
        const int64_t begin = c.index * chunk;
        ASSERT_LT(begin, sizes[t]) << "an empty chunk";
        for (int64_t i = begin; i < std::min<int64_t>(begin + chunk, sizes[t]); ++i) {
          ++visits[t][static_cast<size_t>(i)];
        }
      }
    }
    for (size_t t = 0; t < sizes.size(); ++t) {
      for (int v : visits[t]) ASSERT_EQ(v, 1) << "tensor " << t << ", chunk " << chunk;
    }
  }
  EXPECT_TRUE(PlanMultiTensorLaunches(std::vector<int64_t>{0, 0}).empty());
  // Full-size tables: 36 tensors of one chunk fill a launch; the 37th opens the next.
  const std::vector<int64_t> many(37, kLaunchChunk);
  const std::vector<MultiTensorLaunch> two = PlanMultiTensorLaunches(many);
  ASSERT_EQ(two.size(), 2u);
  EXPECT_EQ(two[0].tensors.size(), static_cast<size_t>(kMaxLaunchTensors));
  EXPECT_EQ(two[1].tensors, std::vector<int>{36});
}

}  // namespace loom::runtime::kernels::cuda
