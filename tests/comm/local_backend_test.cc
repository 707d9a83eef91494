// The `local` backend (ranks as threads): the full collective sweep for world sizes 1-8, and the
// failure modes every backend must show: a rank that skips a collective makes the others fail
// within the timeout naming the op, sequence number and missing rank; the communicator is then
// poisoned; with fingerprint checks on, a count mismatch names each rank's call.
#include "comm/local/local_backend.h"

#include <gtest/gtest.h>

#include <thread>

#include "runtime/base/logging.h"
#include "tests/comm/collective_checks.h"
#include "tests/runtime/emulated_device.h"

namespace loom::comm {
namespace {

using runtime::DType;
using runtime::MemoryTag;
using runtime::Tensor;

// Runs body(rank, comm) on one thread per rank.
template <typename Body>
void OnEveryRank(std::vector<std::unique_ptr<Communicator>>& world, Body body) {
  std::vector<std::thread> threads;
  for (size_t r = 0; r < world.size(); ++r) {
    threads.emplace_back([&, r] {
      base::SetThreadRank(static_cast<int>(r));
      body(static_cast<int>(r), *world[r]);
    });
  }
  for (std::thread& t : threads) t.join();
}

TEST(LocalBackendTest, CollectiveSweepWorldSizes1To8) {
  for (int n = 1; n <= 8; ++n) {
    std::vector<std::unique_ptr<Communicator>> world = MakeLocalWorld(n);
    testing::SweepOptions options;
    if (n > 4) options.counts = {0, 1, 7, 4099};  // keep 1 << 20 to the smaller worlds
    OnEveryRank(world, [&](int, Communicator& c) { testing::RunCollectiveSweep(c, options); });
  }
}

// Device tensors (an emulated CUDA device: tests/runtime/emulated_device.h) through every
// collective: staged through host buffers on 2-4 ranks, one device copy on one rank; the same
// exact results as the host sweep.
TEST(LocalBackendTest, CollectiveSweepOnDeviceTensors) {
  runtime::testing::EmulatedDevice device;
  for (int n = 1; n <= 4; ++n) {
    std::vector<std::unique_ptr<Communicator>> world = MakeLocalWorld(n);
    testing::SweepOptions options;
    options.counts = {0, 1, 7, 4099};
    options.allocator = &device.allocator();
    OnEveryRank(world, [&](int, Communicator& c) { testing::RunCollectiveSweep(c, options); });
  }
}

// Bad arguments on device tensors fail at once, without poisoning the communicator, and nothing
// is staged.
TEST(LocalBackendTest, BadDeviceArgumentsFailWithoutPoisoning) {
  runtime::testing::EmulatedDevice device;
  std::vector<std::unique_ptr<Communicator>> world = MakeLocalWorld(2);
  OnEveryRank(world, [&](int, Communicator& c) {
    Tensor in = Tensor::Zeros({8}, DType::kF32, MemoryTag::kComm, &device.allocator());
    Tensor out = Tensor::Zeros({3}, DType::kF32, MemoryTag::kComm, &device.allocator());
    const absl::Status bad = c.AllGather(in, out)->Wait();
    EXPECT_EQ(bad.code(), absl::StatusCode::kInvalidArgument) << bad;
    EXPECT_TRUE(c.poison().ok());
    Tensor whole = Tensor::Zeros({16}, DType::kF32, MemoryTag::kComm, &device.allocator());
    EXPECT_TRUE(c.AllGather(in, whole)->Wait().ok());
  });
}

CommOptions FailFast() {
  CommOptions o;
  o.timeout = absl::Milliseconds(500);
  o.abort_on_error = false;
  return o;
}

TEST(LocalBackendTest, SkippedCollectiveTimesOutNamingTheMissingRank) {
  std::vector<std::unique_ptr<Communicator>> world = MakeLocalWorld(3, FailFast());
  std::vector<absl::Status> first(3), second(3);
  OnEveryRank(world, [&](int r, Communicator& c) {
    Tensor t = Tensor::Zeros({4099}, DType::kF32, MemoryTag::kComm);
    ASSERT_TRUE(c.AllReduce(t, t, ReduceOp::kSum)->Wait().ok());
    if (r == 1) return;  // rank 1 skips the second collective
    first[r] = c.AllReduce(t, t, ReduceOp::kSum)->Wait();
    second[r] = c.Barrier()->Wait();
  });
  for (int r : {0, 2}) {
    EXPECT_EQ(first[r].code(), absl::StatusCode::kDeadlineExceeded) << first[r];
    EXPECT_NE(first[r].message().find("AllReduce(f32, count 4099, sum) #1"), std::string::npos)
        << first[r];
    EXPECT_NE(first[r].message().find("waiting for rank(s) 1"), std::string::npos) << first[r];
    EXPECT_NE(second[r].message().find("poisoned"), std::string::npos) << second[r];
    EXPECT_NE(second[r].message().find("#1"), std::string::npos) << second[r];
    EXPECT_EQ(world[r]->poison().code(), absl::StatusCode::kDeadlineExceeded);
  }
  const std::vector<std::string> history = world[0]->History();
  ASSERT_FALSE(history.empty());
  EXPECT_NE(history.back().find("skipped (poisoned)"), std::string::npos);
}

TEST(LocalBackendTest, FingerprintMismatchNamesEachRanksCall) {
  CommOptions o = FailFast();
  o.check_fingerprints = true;
  std::vector<std::unique_ptr<Communicator>> world = MakeLocalWorld(2, o);
  std::vector<absl::Status> status(2);
  OnEveryRank(world, [&](int r, Communicator& c) {
    Tensor t = Tensor::Zeros({r == 0 ? 4099 : 4098}, DType::kF32, MemoryTag::kComm);
    status[r] = c.AllReduce(t, t, ReduceOp::kSum)->Wait();
  });
  for (int r = 0; r < 2; ++r) {
    EXPECT_EQ(status[r].code(), absl::StatusCode::kFailedPrecondition) << status[r];
    EXPECT_NE(status[r].message().find("rank 0 AllReduce(f32, count 4099, sum); rank 1 "
                                       "AllReduce(f32, count 4098, sum)"),
              std::string::npos)
        << status[r];
  }
}

TEST(LocalBackendTest, BadArgumentsFailWithoutPoisoning) {
  std::vector<std::unique_ptr<Communicator>> world = MakeLocalWorld(2, FailFast());
  Tensor a = Tensor::Zeros({6}, DType::kF32, MemoryTag::kComm);
  Tensor b = Tensor::Zeros({4}, DType::kF32, MemoryTag::kComm);
  const absl::Status s = world[0]->ReduceScatter(a, b, ReduceOp::kSum)->Wait();
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(s.message().find("in has 6 elements"), std::string::npos) << s;
  Tensor i = Tensor::Zeros({4}, DType::kI32, MemoryTag::kComm);
  EXPECT_NE(world[0]->AllReduce(i, i, ReduceOp::kAvg)->Wait().message().find("avg"),
            std::string::npos);
  EXPECT_EQ(world[0]->Send(a, 0)->Wait().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(world[0]->poison().ok());
}

TEST(LocalBackendTest, WorkOverlapsWithCaller) {
  std::vector<std::unique_ptr<Communicator>> world = MakeLocalWorld(2);
  OnEveryRank(world, [&](int, Communicator& c) {
    Tensor t = Tensor::Zeros({1 << 16}, DType::kF32, MemoryTag::kComm);
    t.Fill(1.0f);
    std::shared_ptr<Work> w = c.AllReduce(t, t, ReduceOp::kSum);  // returns before completion
    ASSERT_TRUE(w->Wait().ok());
    EXPECT_TRUE(w->Test());
    EXPECT_EQ(t.data<float>()[123], 2.0f);
  });
}

}  // namespace
}  // namespace loom::comm
