// loom's point-to-point collective algorithms over the thread-rank transport (gloo-style: N ranks
// as threads, expected values computed independently from the world size):
//  - each algorithm on its own at odd world sizes and counts (0, 1, 7, 4099, 1 << 20), with
//    poisoned outputs and exact expected values, including the non-power-of-two fix-up of
//    recursive halving-doubling and messages cut into many segments;
//  - numerics: 16-bit sums accumulate in f32 across hops; every rank gets identical bytes;
//  - the `ring` backend under the shared collective sweep for world sizes 1-8, with the automatic
//    choice and with each all-reduce algorithm forced;
//  - failures: a rank that stops participating makes the others fail within the deadline naming
//    the peer they wait for, and mismatched AllToAllV counts name both ranks.
#include <gtest/gtest.h>

#include <algorithm>
#include <functional>
#include <random>
#include <string>

#include "absl/strings/str_cat.h"
#include "comm/algorithms/dissemination_barrier.h"
#include "comm/algorithms/halving_doubling_all_reduce.h"
#include "comm/algorithms/pairwise_all_to_all.h"
#include "comm/algorithms/ring_all_gather.h"
#include "comm/algorithms/ring_all_reduce.h"
#include "comm/algorithms/ring_reduce_scatter.h"
#include "comm/algorithms/tree_broadcast.h"
#include "comm/local/local_p2p.h"
#include "comm/p2p_backend.h"
#include "runtime/tensor.h"
#include "tests/comm/collective_checks.h"
#include "tests/comm/p2p_test_util.h"

namespace loom::comm {
namespace {

using runtime::DType;
using testing::At;
using testing::Fill;
using testing::OnThreads;
using testing::Poisoned;
using testing::Rounded;

constexpr DType kDTypes[] = {DType::kF32, DType::kBF16, DType::kF16, DType::kI32, DType::kI64};
constexpr ReduceOp kOps[] = {ReduceOp::kSum, ReduceOp::kAvg, ReduceOp::kMax, ReduceOp::kMin};
constexpr int kWorlds[] = {1, 2, 3, 4, 5, 7, 8};
constexpr int64_t kCounts[] = {0, 1, 7, 4099};

Deadline In(std::chrono::milliseconds ms) { return {std::chrono::steady_clock::now() + ms}; }
Deadline Generous() { return In(std::chrono::milliseconds(60'000)); }

// Rank r's input element i: small signed integers, exact in every dtype and every partial sum,
// differing per rank so that max, min and block placement are all visible.
double Input(int r, int64_t i) { return static_cast<double>((i * 5 + r * 3) % 11) - 5; }

// op over ranks of Input(q, i), rounded as the dtype stores it (avg divides once, in f32).
double Expected(DType dtype, ReduceOp op, int n, int64_t i) {
  double acc = Input(0, i);
  for (int q = 1; q < n; ++q) {
    const double v = Input(q, i);
    acc = op == ReduceOp::kMax   ? std::max(acc, v)
          : op == ReduceOp::kMin ? std::min(acc, v)
                                 : acc + v;
  }
  if (op == ReduceOp::kAvg) return Rounded(dtype, static_cast<float>(acc) / static_cast<float>(n));
  return acc;
}

// Records a failure for every wrong element (the first three in detail).
template <typename F>
void ExpectElements(DType dtype, const std::vector<char>& out, int64_t n, const std::string& what,
                    F expected) {
  int64_t wrong = 0;
  for (int64_t i = 0; i < n; ++i) {
    const double e = expected(i), got = At(dtype, out, i);
    if (got != e && ++wrong <= 3) {
      ADD_FAILURE() << what << ": element " << i << " is " << got << ", expected " << e;
    }
  }
  EXPECT_EQ(wrong, 0) << what << ": " << wrong << " of " << n << " elements wrong";
}

using ReduceAlgorithm =
    std::function<absl::Status(const P2PContext&, const void*, void*, int64_t, DType, ReduceOp)>;

// Every rank all-reduces Input(r, ·) with `algorithm`, out of place and in place.
void CheckAllReduce(const ReduceAlgorithm& algorithm, int n, int64_t count, DType dtype,
                    ReduceOp op, int64_t segment_bytes = 1 << 20) {
  auto ranks = MakeLocalPointToPoint(n);
  OnThreads(n, [&](int r) {
    const std::string what = absl::StrCat(runtime::DTypeName(dtype), " ", ReduceOpName(op),
                                          " n=", n, " count=", count, " rank ", r);
    const P2PContext ctx{*ranks[r], Generous(), 0, segment_bytes};
    std::vector<char> in = Fill(dtype, count, [&](int64_t i) { return Input(r, i); });
    std::vector<char> out = Poisoned(dtype, count);
    const absl::Status s = algorithm(ctx, in.data(), out.data(), count, dtype, op);
    ASSERT_TRUE(s.ok()) << what << ": " << s;
    ExpectElements(dtype, out, count, what, [&](int64_t i) { return Expected(dtype, op, n, i); });
    ASSERT_TRUE(algorithm(ctx, in.data(), in.data(), count, dtype, op).ok()) << what;
    ExpectElements(dtype, in, count, what + " in place",
                   [&](int64_t i) { return Expected(dtype, op, n, i); });
  });
}

TEST(RingAllReduceTest, OddWorldsCountsDTypesAndOps) {
  for (int n : kWorlds) {
    for (int64_t count : kCounts) {
      for (DType dtype : kDTypes) {
        for (ReduceOp op : kOps) {
          if (op == ReduceOp::kAvg && !runtime::IsFloatingPoint(dtype)) continue;
          CheckAllReduce(RingAllReduce, n, count, dtype, op);
        }
      }
    }
  }
}

TEST(RingAllReduceTest, ManySegments) {
  // 24-byte segments: a 4099-element buffer moves in hundreds of segments per block, with short
  // and empty windows at the tail.
  for (int n : {2, 3, 5}) {
    for (DType dtype : {DType::kF32, DType::kBF16, DType::kI64}) {
      CheckAllReduce(RingAllReduce, n, 4099, dtype, ReduceOp::kSum, 24);
      CheckAllReduce(RingAllReduce, n, 7, dtype, ReduceOp::kMax, 24);
    }
  }
}

TEST(RingAllReduceTest, LargeBuffers) {
  for (int n : {3, 4}) {
    for (DType dtype : {DType::kF32, DType::kBF16}) {
      CheckAllReduce(RingAllReduce, n, 1 << 20, dtype, ReduceOp::kSum);
    }
  }
}

TEST(HalvingDoublingAllReduceTest, OddWorldsCountsDTypesAndOps) {
  for (int n : kWorlds) {
    for (int64_t count : kCounts) {
      for (DType dtype : kDTypes) {
        for (ReduceOp op : kOps) {
          if (op == ReduceOp::kAvg && !runtime::IsFloatingPoint(dtype)) continue;
          CheckAllReduce(HalvingDoublingAllReduce, n, count, dtype, op);
        }
      }
    }
  }
}

TEST(HalvingDoublingAllReduceTest, NonPowerOfTwoFixUp) {
  // 3 = 2 + 1, 5 = 4 + 1, 6 = 4 + 2, 7 = 4 + 3 folded ranks; counts smaller than, equal to and
  // just above the number of blocks.
  for (int n : {3, 5, 6, 7}) {
    for (int64_t count : {2, 3, 4, 5, 8, 9, 1000}) {
      CheckAllReduce(HalvingDoublingAllReduce, n, count, DType::kF32, ReduceOp::kSum);
      CheckAllReduce(HalvingDoublingAllReduce, n, count, DType::kBF16, ReduceOp::kAvg);
      CheckAllReduce(HalvingDoublingAllReduce, n, count, DType::kI32, ReduceOp::kMin);
    }
  }
}

TEST(HalvingDoublingAllReduceTest, LargeBuffers) {
  for (int n : {3, 4}) {
    for (DType dtype : {DType::kF32, DType::kBF16}) {
      CheckAllReduce(HalvingDoublingAllReduce, n, 1 << 20, dtype, ReduceOp::kSum);
    }
  }
}

void CheckReduceScatter(int n, int64_t count, DType dtype, ReduceOp op, int64_t segment_bytes) {
  auto ranks = MakeLocalPointToPoint(n);
  OnThreads(n, [&](int r) {
    const std::string what =
        absl::StrCat("ReduceScatter ", runtime::DTypeName(dtype), " ", ReduceOpName(op), " n=", n,
                     " count=", count, " rank ", r);
    const P2PContext ctx{*ranks[r], Generous(), 0, segment_bytes};
    std::vector<char> in = Fill(dtype, n * count, [&](int64_t i) { return Input(r, i); });
    std::vector<char> out = Poisoned(dtype, count);
    const absl::Status s = RingReduceScatter(ctx, in.data(), out.data(), count, dtype, op);
    ASSERT_TRUE(s.ok()) << what << ": " << s;
    ExpectElements(dtype, out, count, what,
                   [&](int64_t i) { return Expected(dtype, op, n, r * count + i); });
  });
}

TEST(RingReduceScatterTest, OddWorldsCountsDTypesAndOps) {
  for (int n : kWorlds) {
    for (int64_t count : kCounts) {
      for (DType dtype : kDTypes) {
        for (ReduceOp op : kOps) {
          if (op == ReduceOp::kAvg && !runtime::IsFloatingPoint(dtype)) continue;
          CheckReduceScatter(n, count, dtype, op, 1 << 20);
        }
      }
    }
  }
  CheckReduceScatter(5, 4099, DType::kBF16, ReduceOp::kAvg, 40);  // many segments
  CheckReduceScatter(3, 1 << 20, DType::kF32, ReduceOp::kSum, 1 << 20);
  CheckReduceScatter(4, 1 << 20, DType::kBF16, ReduceOp::kSum, 1 << 20);
}

void CheckAllGather(int n, int64_t count, DType dtype, int64_t segment_bytes) {
  auto ranks = MakeLocalPointToPoint(n);
  OnThreads(n, [&](int r) {
    const std::string what = absl::StrCat("AllGather ", runtime::DTypeName(dtype), " n=", n,
                                          " count=", count, " rank ", r);
    const P2PContext ctx{*ranks[r], Generous(), 0, segment_bytes};
    std::vector<char> in = Fill(dtype, count, [&](int64_t i) { return Input(r, i); });
    std::vector<char> out = Poisoned(dtype, n * count);
    const absl::Status s = RingAllGather(ctx, in.data(), out.data(), count, dtype);
    ASSERT_TRUE(s.ok()) << what << ": " << s;
    ExpectElements(dtype, out, n * count, what,
                   [&](int64_t i) { return Input(static_cast<int>(i / count), i % count); });
  });
}

TEST(RingAllGatherTest, OddWorldsCountsAndDTypes) {
  for (int n : kWorlds) {
    for (int64_t count : kCounts) {
      for (DType dtype : kDTypes) CheckAllGather(n, count, dtype, 1 << 20);
    }
  }
  CheckAllGather(7, 4099, DType::kF16, 30);  // many segments
  CheckAllGather(3, 1 << 20, DType::kF32, 1 << 20);
  CheckAllGather(4, 1 << 20, DType::kBF16, 1 << 20);
}

// Rank r's block for rank j: exact in every dtype.
double AllToAllValue(int r, int j, int64_t i) {
  return static_cast<double>((r * 7 + j * 3 + i) % 50);
}

TEST(PairwiseAllToAllTest, OddWorldsCountsAndDTypesInAndOutOfPlace) {
  for (int n : kWorlds) {
    for (int64_t count : {int64_t{0}, int64_t{1}, int64_t{7}, int64_t{4099}}) {
      for (DType dtype : kDTypes) {
        auto ranks = MakeLocalPointToPoint(n);
        OnThreads(n, [&](int r) {
          const std::string what = absl::StrCat("AllToAll ", runtime::DTypeName(dtype), " n=", n,
                                                " count=", count, " rank ", r);
          const P2PContext ctx{*ranks[r], Generous()};
          auto input = [&](int64_t i) {
            return AllToAllValue(r, static_cast<int>(i / count), i % count);
          };
          auto expected = [&](int64_t i) {
            return AllToAllValue(static_cast<int>(i / count), r, i % count);
          };
          std::vector<char> in = Fill(dtype, n * count, input);
          std::vector<char> out = Poisoned(dtype, n * count);
          ASSERT_TRUE(PairwiseAllToAll(ctx, in.data(), out.data(), count, dtype).ok()) << what;
          ExpectElements(dtype, out, n * count, what, expected);
          ASSERT_TRUE(PairwiseAllToAll(ctx, in.data(), in.data(), count, dtype).ok()) << what;
          ExpectElements(dtype, in, n * count, what + " in place", expected);
        });
      }
    }
  }
}

TEST(PairwiseAllToAllTest, VariableCounts) {
  for (int n : kWorlds) {
    auto ranks = MakeLocalPointToPoint(n);
    OnThreads(n, [&](int r) {
      // Rank r sends (2r + 3j) % 5 elements valued 100r + j to rank j (some blocks are empty).
      std::vector<int64_t> send(n), recv(n);
      std::vector<double> in_values, expect_values;
      for (int j = 0; j < n; ++j) {
        send[j] = (2 * r + 3 * j) % 5;
        recv[j] = (2 * j + 3 * r) % 5;
        in_values.insert(in_values.end(), send[j], 100.0 * r + j);
        expect_values.insert(expect_values.end(), recv[j], 100.0 * j + r);
      }
      std::vector<char> in =
          Fill(DType::kI32, in_values.size(), [&](int64_t i) { return in_values[i]; });
      std::vector<char> out = Poisoned(DType::kI32, expect_values.size());
      const P2PContext ctx{*ranks[r], Generous()};
      const absl::Status s = PairwiseAllToAllV(ctx, in.data(), send, out.data(), recv, DType::kI32);
      ASSERT_TRUE(s.ok()) << s;
      ExpectElements(DType::kI32, out, expect_values.size(), absl::StrCat("AllToAllV rank ", r),
                     [&](int64_t i) { return expect_values[i]; });
    });
  }
}

TEST(PairwiseAllToAllTest, MismatchedCountsNameBothRanks) {
  auto ranks = MakeLocalPointToPoint(2);
  std::vector<absl::Status> status(2);
  OnThreads(2, [&](int r) {
    // Rank 0 sends 3 elements to rank 1, which expects 2.
    const std::vector<int64_t> send =
        r == 0 ? std::vector<int64_t>{1, 3} : std::vector<int64_t>{2, 1};
    const std::vector<int64_t> recv =
        r == 0 ? std::vector<int64_t>{1, 2} : std::vector<int64_t>{2, 1};
    std::vector<char> in(5 * sizeof(int32_t)), out(5 * sizeof(int32_t));
    status[r] = PairwiseAllToAllV(P2PContext{*ranks[r], In(std::chrono::milliseconds(2000))},
                                  in.data(), send, out.data(), recv, DType::kI32);
  });
  EXPECT_TRUE(status[0].ok()) << status[0];
  EXPECT_EQ(status[1].code(), absl::StatusCode::kInvalidArgument) << status[1];
  EXPECT_NE(status[1].message().find("rank 1 expects 2 i32 elements from rank 0"),
            std::string::npos)
      << status[1];
  EXPECT_NE(status[1].message().find("12 bytes"), std::string::npos) << status[1];
}

TEST(TreeBroadcastTest, EveryRootOddWorldsAndSegments) {
  for (int n : kWorlds) {
    for (int64_t count : kCounts) {
      for (DType dtype : {DType::kF32, DType::kBF16, DType::kI64}) {
        for (int root = 0; root < n; ++root) {
          auto ranks = MakeLocalPointToPoint(n);
          OnThreads(n, [&](int r) {
            const std::string what = absl::StrCat("Broadcast ", runtime::DTypeName(dtype), " n=", n,
                                                  " count=", count, " root ", root, " rank ", r);
            // 64-byte segments: a 4099-element buffer is forwarded segment by segment.
            const P2PContext ctx{*ranks[r], Generous(), 0, count == 4099 ? 64 : 1 << 20};
            std::vector<char> buf =
                r == root ? Fill(dtype, count, [&](int64_t i) { return Input(root, i); })
                          : Poisoned(dtype, count);
            ASSERT_TRUE(TreeBroadcast(ctx, buf.data(), count, dtype, root).ok()) << what;
            ExpectElements(dtype, buf, count, what, [&](int64_t i) { return Input(root, i); });
          });
        }
      }
    }
  }
  auto ranks = MakeLocalPointToPoint(5);
  OnThreads(5, [&](int r) {
    std::vector<char> buf = r == 3
                                ? Fill(DType::kF32, 1 << 20, [&](int64_t i) { return Input(3, i); })
                                : Poisoned(DType::kF32, 1 << 20);
    ASSERT_TRUE(
        TreeBroadcast(P2PContext{*ranks[r], Generous()}, buf.data(), 1 << 20, DType::kF32, 3).ok());
    ExpectElements(DType::kF32, buf, 1 << 20, "Broadcast 1 << 20",
                   [&](int64_t i) { return Input(3, i); });
  });
}

TEST(DisseminationBarrierTest, NoRankLeavesBeforeAllArrive) {
  for (int n : kWorlds) {
    auto ranks = MakeLocalPointToPoint(n);
    std::atomic<int> arrived{0};
    OnThreads(n, [&](int r) {
      for (int round = 1; round <= 3; ++round) {
        if (r == n - 1) std::this_thread::sleep_for(std::chrono::milliseconds(5));  // a late rank
        arrived.fetch_add(1);
        ASSERT_TRUE(DisseminationBarrier(P2PContext{*ranks[r], Generous()}).ok());
        EXPECT_GE(arrived.load(), round * n)
            << "rank " << r << " left barrier " << round << " early";
        ASSERT_TRUE(DisseminationBarrier(P2PContext{*ranks[r], Generous()}).ok());
      }
    });
  }
}

TEST(P2PNumericsTest, SixteenBitSumsAccumulateInF32AcrossHops) {
  // One rank contributes 2^8 (bf16) or 2^11 (f16), the seven others 1: rounding the running sum to
  // 16 bits at every hop would drop each 1 that is added after the big value; f32 partials keep
  // the exact 263 / 2055, rounded once (ties to even: 264 / 2056).
  const int n = 8;
  for (DType dtype : {DType::kBF16, DType::kF16}) {
    const double big = dtype == DType::kBF16 ? 256 : 2048;
    const double want = Rounded(dtype, big + n - 1);
    ASSERT_NE(want, big);
    const ReduceAlgorithm algorithms[] = {RingAllReduce, HalvingDoublingAllReduce};
    for (const ReduceAlgorithm& algorithm : algorithms) {
      auto ranks = MakeLocalPointToPoint(n);
      OnThreads(n, [&](int r) {
        // 64 elements: every block of the ring starts its accumulation at a different rank.
        std::vector<char> in = Fill(dtype, 64, [&](int64_t) { return r == 0 ? big : 1.0; });
        std::vector<char> out = Poisoned(dtype, 64);
        ASSERT_TRUE(algorithm(P2PContext{*ranks[r], Generous()}, in.data(), out.data(), 64, dtype,
                              ReduceOp::kSum)
                        .ok());
        ExpectElements(dtype, out, 64, absl::StrCat(runtime::DTypeName(dtype), " rank ", r),
                       [&](int64_t) { return want; });
      });
    }
    auto ranks = MakeLocalPointToPoint(n);
    OnThreads(n, [&](int r) {
      std::vector<char> in = Fill(dtype, 8 * n, [&](int64_t) { return r == 0 ? big : 1.0; });
      std::vector<char> out = Poisoned(dtype, 8);
      ASSERT_TRUE(RingReduceScatter(P2PContext{*ranks[r], Generous()}, in.data(), out.data(), 8,
                                    dtype, ReduceOp::kSum)
                      .ok());
      ExpectElements(dtype, out, 8, "ReduceScatter", [&](int64_t) { return want; });
    });
  }
}

TEST(P2PNumericsTest, EveryRankGetsIdenticalBytesForArbitraryFloats) {
  // Random floats: sums are not exact and the ring associates every block differently, yet each
  // block is finished once by its owner and copied to everyone.
  for (int n : {3, 5, 8}) {
    const ReduceAlgorithm algorithms[] = {RingAllReduce, HalvingDoublingAllReduce};
    for (const ReduceAlgorithm& algorithm : algorithms) {
      for (DType dtype : {DType::kF32, DType::kBF16}) {
        const int64_t count = 4099;
        auto ranks = MakeLocalPointToPoint(n);
        std::vector<std::vector<char>> outs(n);
        std::vector<std::vector<float>> inputs(n);
        OnThreads(n, [&](int r) {
          std::mt19937 gen(1234 + r);
          std::uniform_real_distribution<float> dist(-1.0f, 1.0f);
          inputs[r].resize(count);
          for (float& x : inputs[r]) x = dist(gen);
          std::vector<char> in = Fill(dtype, count, [&](int64_t i) { return inputs[r][i]; });
          outs[r] = Poisoned(dtype, count);
          ASSERT_TRUE(algorithm(P2PContext{*ranks[r], Generous(), 0, 256}, in.data(),
                                outs[r].data(), count, dtype, ReduceOp::kAvg)
                          .ok());
        });
        for (int r = 1; r < n; ++r) EXPECT_EQ(outs[r], outs[0]) << "rank " << r << " n=" << n;
        for (int64_t i = 0; i < count; ++i) {
          double sum = 0;
          for (int r = 0; r < n; ++r)
            sum += At(dtype, Fill(dtype, 1, [&](int64_t) { return inputs[r][i]; }), 0);
          ASSERT_NEAR(At(dtype, outs[0], i), sum / n, dtype == DType::kF32 ? 1e-6 : 1e-2)
              << "element " << i;
        }
      }
    }
  }
}

TEST(P2PBackendTest, ChoosesHalvingDoublingForSmallMessagesWhereItWins) {
  using A = P2POptions::AllReduceAlgorithm;
  const P2POptions o;
  EXPECT_EQ(ChooseAllReduce(o, 8, 4096), A::kHalvingDoubling);
  EXPECT_EQ(ChooseAllReduce(o, 8, 1 << 20), A::kHalvingDoubling);
  EXPECT_EQ(ChooseAllReduce(o, 8, (1 << 20) + 1), A::kRing);
  EXPECT_EQ(ChooseAllReduce(o, 2, 4), A::kHalvingDoubling);
  EXPECT_EQ(ChooseAllReduce(o, 3, 4), A::kRing);  // the fix-up never pays off with 3 ranks
  EXPECT_EQ(ChooseAllReduce(o, 6, 4096), A::kHalvingDoubling);
  EXPECT_EQ(ChooseAllReduce(o, 6, 128 << 10), A::kRing);
  P2POptions forced;
  forced.all_reduce = A::kRing;
  EXPECT_EQ(ChooseAllReduce(forced, 8, 4), A::kRing);
}

void SweepRingWorld(int n, P2POptions p2p, std::vector<int64_t> counts) {
  std::vector<std::unique_ptr<Communicator>> world = MakeLocalRingWorld(n, CommOptions{}, p2p);
  ASSERT_EQ(world[0]->backend_name(), "ring");
  testing::SweepOptions options;
  options.counts = std::move(counts);
  OnThreads(n, [&](int r) { testing::RunCollectiveSweep(*world[r], options); });
}

TEST(P2PBackendTest, CollectiveSweepWorldSizes1To8) {
  for (int n = 1; n <= 8; ++n) {
    SCOPED_TRACE(absl::StrCat("world ", n));
    SweepRingWorld(n, P2POptions{},
                   n <= 4 ? std::vector<int64_t>{0, 1, 7, 4099, 1 << 20}
                          : std::vector<int64_t>{0, 1, 7, 4099});
  }
}

TEST(P2PBackendTest, CollectiveSweepWithEachAllReduceForcedAndSmallSegments) {
  for (auto algorithm :
       {P2POptions::AllReduceAlgorithm::kRing, P2POptions::AllReduceAlgorithm::kHalvingDoubling}) {
    for (int n = 1; n <= 8; ++n) {
      SCOPED_TRACE(absl::StrCat("world ", n, " algorithm ", static_cast<int>(algorithm)));
      P2POptions p2p;
      p2p.all_reduce = algorithm;
      p2p.segment_bytes = 1000;  // not a multiple of any element size
      SweepRingWorld(n, p2p, {0, 1, 7, 4099});
    }
  }
}

TEST(P2PBackendTest, UserTagsNeverMatchCollectiveTraffic) {
  std::vector<std::unique_ptr<Communicator>> world = MakeLocalRingWorld(2);
  OnThreads(2, [&](int r) {
    Communicator& c = *world[r];
    runtime::Tensor msg = runtime::Tensor::Zeros({3}, DType::kF32, runtime::MemoryTag::kComm);
    runtime::Tensor t = runtime::Tensor::Zeros({3}, DType::kF32, runtime::MemoryTag::kComm);
    t.Fill(1.0f);
    if (r == 0) {
      msg.Fill(42.0f);
      ASSERT_TRUE(c.Send(msg, 1, /*tag=*/0)->Wait().ok());  // sent before the collective
      ASSERT_TRUE(c.AllReduce(t, t, ReduceOp::kSum)->Wait().ok());
    } else {
      ASSERT_TRUE(c.AllReduce(t, t, ReduceOp::kSum)->Wait().ok());
      ASSERT_TRUE(c.Recv(msg, 0, /*tag=*/0)->Wait().ok());
      EXPECT_EQ(msg.data<float>()[2], 42.0f);
    }
    EXPECT_EQ(t.data<float>()[0], 2.0f);
  });
}

CommOptions FailFast() {
  CommOptions o;
  o.timeout = absl::Milliseconds(500);
  o.abort_on_error = false;
  return o;
}

// Rank `missing` skips the second call; returns every rank's status of that call and of the next.
template <typename Call>
void SkipOneCall(int n, int missing, Call call, std::vector<absl::Status>& first,
                 std::vector<absl::Status>& second,
                 std::vector<std::unique_ptr<Communicator>>& world) {
  first.assign(n, absl::OkStatus());
  second.assign(n, absl::OkStatus());
  OnThreads(n, [&](int r) {
    ASSERT_TRUE(call(*world[r])->Wait().ok());
    if (r == missing) return;
    first[r] = call(*world[r])->Wait();
    second[r] = world[r]->Barrier()->Wait();
  });
}

TEST(P2PBackendTest, MissingRankFailsTheOthersWithinTheDeadline) {
  // Point-to-point ranks can only name the peer they are blocked on: with a ring all-reduce the
  // successor of the missing rank names it, and the rank after that names the successor (which is
  // itself stuck). Every rank fails within its deadline rather than hanging.
  for (int n : {2, 3, 4}) {
    SCOPED_TRACE(absl::StrCat("world ", n));
    P2POptions ring;
    ring.all_reduce = P2POptions::AllReduceAlgorithm::kRing;
    std::vector<std::unique_ptr<Communicator>> world = MakeLocalRingWorld(n, FailFast(), ring);
    std::vector<runtime::Tensor> bufs;
    for (int r = 0; r < n; ++r) {
      bufs.push_back(runtime::Tensor::Zeros({4099}, DType::kF32, runtime::MemoryTag::kComm));
    }
    std::vector<absl::Status> first, second;
    SkipOneCall(
        n, 1,
        [&](Communicator& c) {
          return c.AllReduce(bufs[c.rank()], bufs[c.rank()], ReduceOp::kSum);
        },
        first, second, world);
    for (int r = 0; r < n; ++r) {
      if (r == 1) continue;
      EXPECT_EQ(first[r].code(), absl::StatusCode::kDeadlineExceeded) << first[r];
      EXPECT_NE(first[r].message().find("AllReduce(f32, count 4099, sum) #1"), std::string::npos)
          << first[r];
      EXPECT_NE(first[r].message().find("(ring) timed out"), std::string::npos) << first[r];
      const int blocked_on = (r + n - 1) % n;  // its ring predecessor
      EXPECT_NE(first[r].message().find(absl::StrCat("waiting for rank(s) ", blocked_on)),
                std::string::npos)
          << first[r];
      EXPECT_NE(second[r].message().find("poisoned"), std::string::npos) << second[r];
    }
  }
}

TEST(P2PBackendTest, MissingRankInABarrierIsNamedByEveryRank) {
  // Dissemination: in every round a rank first sends, then waits; with 3 ranks each survivor ends
  // up waiting on the missing rank itself.
  std::vector<std::unique_ptr<Communicator>> world = MakeLocalRingWorld(3, FailFast());
  std::vector<absl::Status> first, second;
  SkipOneCall(
      3, 1, [](Communicator& c) { return c.Barrier(); }, first, second, world);
  for (int r : {0, 2}) {
    EXPECT_EQ(first[r].code(), absl::StatusCode::kDeadlineExceeded) << first[r];
    EXPECT_NE(first[r].message().find("Barrier"), std::string::npos) << first[r];
    EXPECT_NE(first[r].message().find("waiting for rank(s) 1"), std::string::npos) << first[r];
  }
}

}  // namespace
}  // namespace loom::comm
