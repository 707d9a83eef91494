// The NCCL backend's own logic on the CPU, against a fake NCCL (tests/comm/fake_nccl.h) over
// thread-ranks and an emulated device: every collective and dtype on device tensors (and host
// tensors, staged to the device) on 1-4 ranks; calls queued after the caller's device work;
// non-blocking initialisation polled to the end or to the deadline; the watchdog aborting the
// NCCL communicator on an asynchronous error and on a call that never finishes, naming op,
// sequence number and rank; two ranks on one GPU refused; fingerprint checks through device
// buffers. The real NCCL runs only on a GPU (nccl_gpu_test, label gpu).
#include "comm/nccl/nccl_backend.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <string>
#include <string_view>
#include <thread>

#include "comm/local/local_backend.h"
#include "runtime/base/logging.h"
#include "tests/comm/collective_checks.h"
#include "tests/comm/fake_nccl.h"
#include "tests/runtime/emulated_device.h"

namespace loom::comm {
namespace {

using runtime::DType;
using runtime::MemoryTag;
using runtime::Tensor;
using testing::FakeNccl;
using testing::FakeNcclWorld;
using ::testing::HasSubstr;

Deadline In(absl::Duration d) {
  return {std::chrono::steady_clock::now() + absl::ToChronoNanoseconds(d)};
}

// Runs body(rank) on one thread per rank.
template <typename Body>
void OnEveryRank(int n, Body body) {
  std::vector<std::thread> threads;
  for (int r = 0; r < n; ++r) {
    threads.emplace_back([&, r] {
      base::SetThreadRank(r);
      body(r);
    });
  }
  for (std::thread& t : threads) t.join();
}

// One rank's NCCL communicator over the fake, bootstrapped by a thread-rank world.
struct Ranks {
  Ranks(int n, runtime::Allocator* device) : fake(n, device), bootstrap(MakeLocalWorld(n)) {}
  absl::StatusOr<std::unique_ptr<Communicator>> Make(int r, CommOptions options,
                                                     absl::Duration init = absl::Seconds(30)) {
    absl::StatusOr<std::unique_ptr<Backend>> b =
        MakeNcclBackend(&fake.rank(r), std::move(bootstrap[r]), In(init));
    if (!b.ok()) return b.status();
    return std::make_unique<Communicator>(std::move(b).value(), options);
  }
  FakeNcclWorld fake;
  std::vector<std::unique_ptr<Communicator>> bootstrap;
};

CommOptions NoAbort(absl::Duration timeout = absl::Seconds(60)) {
  CommOptions options;
  options.abort_on_error = false;
  options.timeout = timeout;
  return options;
}

TEST(NcclBackendTest, CollectiveSweepOnDeviceAndHostTensors) {
  runtime::testing::EmulatedDevice device;
  for (int n = 1; n <= 4; ++n) {
    Ranks ranks(n, &device.allocator());
    // Each operation still "queueing" for a few polls: calls must wait for that before their
    // completion event is recorded.
    for (int r = 0; r < n; ++r) ranks.fake.rank(r).queue_polls = 3;
    OnEveryRank(n, [&](int r) {
      absl::StatusOr<std::unique_ptr<Communicator>> comm = ranks.Make(r, NoAbort());
      ASSERT_TRUE(comm.ok()) << comm.status();
      EXPECT_EQ((*comm)->backend_name(), "nccl");
      testing::SweepOptions options;
      options.counts = {0, 1, 7, 4099};
      options.buffered_send = false;
      options.allocator = &device.allocator();
      testing::RunCollectiveSweep(**comm, options);
      options.allocator = nullptr;  // host tensors: staged through the device
      options.counts = {0, 7};
      testing::RunCollectiveSweep(**comm, options);
    });
  }
}

// Each call is queued on the communication stream after an event recorded on the default stream
// when the call was made, and its completion event is recorded after it.
TEST(NcclBackendTest, CallsFollowTheCallersDeviceWork) {
  runtime::testing::EmulatedDevice device;
  Ranks ranks(2, &device.allocator());
  OnEveryRank(2, [&](int r) {
    absl::StatusOr<std::unique_ptr<Communicator>> comm = ranks.Make(r, NoAbort());
    ASSERT_TRUE(comm.ok()) << comm.status();
    Tensor t = Tensor::Zeros({5}, DType::kF32, MemoryTag::kComm, &device.allocator());
    ASSERT_TRUE((*comm)->AllReduce(t, t, ReduceOp::kSum)->Wait().ok());
    EXPECT_THAT(ranks.fake.rank(r).log(),
                ::testing::ElementsAre("record default", "wait", "AllReduce", "record comm"));
  });
}

// Calls on different communicators of a rank (the world and a split) reach NCCL in the order
// they were made, even when the first is held back before it is queued: NCCL needs every rank to
// queue them in one order.
TEST(NcclBackendTest, CallsOnDifferentCommunicatorsAreQueuedInTheOrderMade) {
  runtime::testing::EmulatedDevice device;
  Ranks ranks(2, &device.allocator());
  for (int r = 0; r < 2; ++r) {
    ranks.fake.rank(r).before_queue = [](const char* op) {
      if (std::string_view(op) == "Broadcast") {
        std::this_thread::sleep_for(std::chrono::milliseconds(100));
      }
    };
  }
  OnEveryRank(2, [&](int r) {
    absl::StatusOr<std::unique_ptr<Communicator>> world = ranks.Make(r, NoAbort());
    ASSERT_TRUE(world.ok()) << world.status();
    absl::StatusOr<std::unique_ptr<Communicator>> half = (*world)->Split(0, r);
    ASSERT_TRUE(half.ok()) << half.status();
    const size_t before = ranks.fake.rank(r).log().size();
    Tensor a = Tensor::Zeros({4}, DType::kF32, MemoryTag::kComm, &device.allocator());
    Tensor b = Tensor::Zeros({8}, DType::kF32, MemoryTag::kComm, &device.allocator());
    auto w1 = (*world)->Broadcast(a, 0);             // held back 100 ms before it is queued
    auto w2 = (*half)->AllGather(b.Slice(0, 4), b);  // made after it, on another communicator
    auto w3 = (*world)->AllReduce(a, a, ReduceOp::kSum);
    for (auto* w : {&w1, &w2, &w3}) ASSERT_TRUE((*w)->Wait().ok());
    std::vector<std::string> ops;
    const std::vector<std::string> log = ranks.fake.rank(r).log();
    for (size_t i = before; i < log.size(); ++i) {
      if (log[i] != "record default" && log[i] != "record comm" && log[i] != "wait") {
        ops.push_back(log[i]);
      }
    }
    EXPECT_THAT(ops, ::testing::ElementsAre("Broadcast", "AllGather", "AllReduce"));
  });
}

TEST(NcclBackendTest, InitialisationIsPolledUntilReady) {
  runtime::testing::EmulatedDevice device;
  Ranks ranks(2, &device.allocator());
  for (int r = 0; r < 2; ++r) ranks.fake.rank(r).init_polls = 50;
  OnEveryRank(2, [&](int r) {
    absl::StatusOr<std::unique_ptr<Communicator>> comm = ranks.Make(r, NoAbort());
    ASSERT_TRUE(comm.ok()) << comm.status();
    Tensor t = Tensor::Zeros({3}, DType::kF32, MemoryTag::kComm, &device.allocator());
    t.Fill(1.0f);
    ASSERT_TRUE((*comm)->AllReduce(t, t, ReduceOp::kSum)->Wait().ok());
    EXPECT_EQ(t.ToF32Vector(), std::vector<float>(3, 2.0f));
  });
}

TEST(NcclBackendTest, InitialisationThatNeverFinishesFailsAtTheDeadlineAndAborts) {
  runtime::testing::EmulatedDevice device;
  Ranks ranks(2, &device.allocator());
  for (int r = 0; r < 2; ++r) ranks.fake.rank(r).init_polls = 1 << 30;
  OnEveryRank(2, [&](int r) {
    absl::StatusOr<std::unique_ptr<Communicator>> comm =
        ranks.Make(r, NoAbort(), absl::Milliseconds(200));
    ASSERT_FALSE(comm.ok());
    EXPECT_EQ(comm.status().code(), absl::StatusCode::kDeadlineExceeded);
    EXPECT_THAT(comm.status().message(), HasSubstr("NCCL initialisation did not finish"));
    EXPECT_THAT(comm.status().message(), HasSubstr("ncclCommAbort"));
    EXPECT_EQ(ranks.fake.rank(r).aborts(), 1);
  });
}

// The watchdog sees NCCL's asynchronous error while it waits for a call: the NCCL communicator
// is aborted and the call fails naming op, sequence number and rank; the communicator is poisoned.
TEST(NcclBackendTest, AsynchronousErrorAbortsAndNamesTheCall) {
  runtime::testing::EmulatedDevice device;
  Ranks ranks(2, &device.allocator());
  OnEveryRank(2, [&](int r) {
    absl::StatusOr<std::unique_ptr<Communicator>> comm = ranks.Make(r, NoAbort());
    ASSERT_TRUE(comm.ok()) << comm.status();
    Tensor t = Tensor::Zeros({4}, DType::kF32, MemoryTag::kComm, &device.allocator());
    if (r == 1) {
      ranks.fake.rank(1).hang = true;  // the call is still on the device when the error comes
      ranks.fake.rank(1).InjectError("remote process exited or there was a network error");
    }
    const absl::Status s = (*comm)->AllReduce(t, t, ReduceOp::kSum)->Wait();
    if (r == 0) {
      EXPECT_TRUE(s.ok()) << s;
      return;
    }
    EXPECT_EQ(s.code(), absl::StatusCode::kInternal);
    EXPECT_THAT(s.message(), HasSubstr("AllReduce(f32, count 4, sum) #0 on rank 1 of 2 (nccl)"));
    EXPECT_THAT(s.message(), HasSubstr("NCCL reported an asynchronous error"));
    EXPECT_THAT(s.message(), HasSubstr("remote process exited or there was a network error"));
    EXPECT_THAT(s.message(), HasSubstr("ncclCommAbort"));
    EXPECT_EQ(ranks.fake.rank(1).aborts(), 1);
    EXPECT_THAT((*comm)->Barrier()->Wait().message(), HasSubstr("poisoned"));
  });
}

TEST(NcclBackendTest, CallThatNeverFinishesTimesOutAndAborts) {
  runtime::testing::EmulatedDevice device;
  Ranks ranks(2, &device.allocator());
  OnEveryRank(2, [&](int r) {
    absl::StatusOr<std::unique_ptr<Communicator>> comm =
        ranks.Make(r, NoAbort(absl::Milliseconds(300)));
    ASSERT_TRUE(comm.ok()) << comm.status();
    if (r == 0) ranks.fake.rank(0).hang = true;
    Tensor t = Tensor::Zeros({4}, DType::kBF16, MemoryTag::kComm, &device.allocator());
    const absl::Status s = (*comm)->AllGather(t.Slice(0, 2), t)->Wait();
    if (r == 1) {
      EXPECT_TRUE(s.ok()) << s;
      return;
    }
    EXPECT_EQ(s.code(), absl::StatusCode::kDeadlineExceeded);
    EXPECT_THAT(s.message(), HasSubstr("AllGather(bf16, count 2) #0 on rank 0 of 2 (nccl) timed "
                                       "out"));
    EXPECT_THAT(s.message(), HasSubstr("still running on the device"));
    EXPECT_EQ(ranks.fake.rank(0).aborts(), 1);
  });
}

TEST(NcclBackendTest, RanksOnOneGpuAreRefused) {
  runtime::testing::EmulatedDevice device;
  Ranks ranks(3, &device.allocator());
  ranks.fake.rank(0).device_id = "0000:19:00.0";
  ranks.fake.rank(2).device_id = "0000:19:00.0";
  OnEveryRank(3, [&](int r) {
    absl::StatusOr<std::unique_ptr<Communicator>> comm = ranks.Make(r, NoAbort());
    ASSERT_FALSE(comm.ok());
    EXPECT_EQ(comm.status().code(), absl::StatusCode::kFailedPrecondition);
    EXPECT_THAT(comm.status().message(),
                HasSubstr("ranks 0 and 2 are on the same GPU (0000:19:00.0)"));
    EXPECT_THAT(comm.status().message(), HasSubstr("CUDA_VISIBLE_DEVICES"));
  });
}

// With fingerprint checks on, the ranks' calls are compared through device buffers first.
TEST(NcclBackendTest, FingerprintMismatchNamesEachRanksCall) {
  runtime::testing::EmulatedDevice device;
  Ranks ranks(2, &device.allocator());
  OnEveryRank(2, [&](int r) {
    CommOptions options = NoAbort();
    options.check_fingerprints = true;
    absl::StatusOr<std::unique_ptr<Communicator>> comm = ranks.Make(r, options);
    ASSERT_TRUE(comm.ok()) << comm.status();
    Tensor same = Tensor::Zeros({6}, DType::kF32, MemoryTag::kComm, &device.allocator());
    ASSERT_TRUE((*comm)->AllReduce(same, same, ReduceOp::kSum)->Wait().ok());
    Tensor t = Tensor::Zeros({4 + r}, DType::kF32, MemoryTag::kComm, &device.allocator());
    const absl::Status s = (*comm)->AllReduce(t, t, ReduceOp::kSum)->Wait();
    EXPECT_EQ(s.code(), absl::StatusCode::kFailedPrecondition);
    EXPECT_THAT(s.message(), HasSubstr("rank 0 AllReduce(f32, count 4, sum); rank 1 "
                                       "AllReduce(f32, count 5, sum)"));
  });
}

}  // namespace
}  // namespace loom::comm
