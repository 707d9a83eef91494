// The MPI-launched backends under mpirun (np 2, 3, 4; LOOM_COMM_BACKEND=mpi|shm picks the
// backend): the shared collective sweep (also with the caller-thread fast path off, and for shm
// with tiny slots so every message runs in many chunks), calls suspended on the fast path and
// resumed by the progress thread, and the failure modes: a rank that skips a collective makes the
// others fail within the timeout naming the op, its sequence number and the missing rank; with
// fingerprint checks a count mismatch names each rank's call. Every rank's exit code counts
// (mpirun fails if any rank fails), and a hang becomes MPI_Abort through the communicator's
// timeout.
#include <gtest/gtest.h>
#include <mpi.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <set>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "comm/world.h"
#include "runtime/base/check.h"
#include "tests/comm/collective_checks.h"

namespace loom::comm {
namespace {

using runtime::DType;
using runtime::MemoryTag;
using runtime::Tensor;

std::string Backend() {
  const char* b = std::getenv("LOOM_COMM_BACKEND");
  return b == nullptr ? "shm" : b;
}

int world_rank() {
  int r = 0;
  MPI_Comm_rank(MPI_COMM_WORLD, &r);
  return r;
}

// Test bodies must not let ranks drift into different tests.
void SyncRanks() { MPI_Barrier(MPI_COMM_WORLD); }

std::unique_ptr<Communicator> World(CommOptions options) {
  absl::StatusOr<std::unique_ptr<Communicator>> world = MakeWorldCommunicator(Backend(), options);
  LOOM_CHECK(world.ok()) << world.status();
  return std::move(world).value();
}

// Generous: a hang turns into MPI_Abort (abort_on_error), so mpirun fails instead of blocking.
CommOptions Sweep() {
  CommOptions o;
  o.timeout = absl::Seconds(60);
  return o;
}

CommOptions FailFast() {
  CommOptions o;
  o.timeout = absl::Seconds(2);
  o.abort_on_error = false;
  return o;
}

TEST(MpiCollectivesTest, CollectiveSweep) {
  std::unique_ptr<Communicator> world = World(Sweep());
  // "hier" is the ring backend composed per host, with shm inside hosts when they have 2+ ranks.
  if (Backend() == "hier") {
    EXPECT_EQ(world->backend_name().rfind("hierarchical(ring", 0), 0u) << world->backend_name();
  } else {
    EXPECT_EQ(world->backend_name(), Backend());
  }
  testing::RunCollectiveSweep(*world);
  SyncRanks();
}

TEST(MpiCollectivesTest, CollectiveSweepOnTheProgressThreadOnly) {
  CommOptions o = Sweep();
  o.inline_max_bytes = 0;
  std::unique_ptr<Communicator> world = World(o);
  testing::SweepOptions sweep;
  sweep.counts = {0, 1, 7, 4099};
  testing::RunCollectiveSweep(*world, sweep);
  SyncRanks();
}

TEST(MpiCollectivesTest, CollectiveSweepInTinyChunksWithStreamingStores) {
  // shm: a 16 KiB ring (the smallest), so every message above 4 KiB runs in many steps and the
  // ring wraps all the time; non-temporal output stores for every size (normally only for large
  // messages).
  const char* settings[][2] = {{"LOOM_SHM_RING_BYTES", "16384"}, {"LOOM_SHM_STREAM_BYTES", "1"}};
  for (const auto& kv : settings) setenv(kv[0], kv[1], 1);
  std::unique_ptr<Communicator> world = World(Sweep());
  for (const auto& kv : settings) unsetenv(kv[0]);
  testing::SweepOptions sweep;
  sweep.counts = {7, 4099, 100003};
  testing::RunCollectiveSweep(*world, sweep);
  SyncRanks();
}

// AllToAllV with buffers from `alloc` (nullptr: the default allocator) where rank r sends
// (r + q) % 3 · count / 2 + 1 elements to rank q, element i of them valued 1000·r + 10·q + i % 10.
// `before` runs after the input is written and before the call. Returns the wrong elements.
int64_t CheckedAllToAllV(Communicator& world, runtime::Allocator* alloc, int64_t count,
                         const std::function<void()>& before) {
  const int n = world.size(), r = world.rank();
  auto sent = [&](int from, int to) { return (from + to) % 3 * count / 2 + 1; };
  auto value = [](int from, int to, int64_t i) { return 1000.0f * from + 10.0f * to + i % 10; };
  std::vector<int64_t> send(n), recv(n);
  int64_t total_send = 0, total_recv = 0;
  for (int q = 0; q < n; ++q) {
    total_send += send[q] = sent(r, q);
    total_recv += recv[q] = sent(q, r);
  }
  Tensor in = Tensor::Empty({total_send}, DType::kF32, MemoryTag::kComm, alloc);
  Tensor out = Tensor::Zeros({total_recv}, DType::kF32, MemoryTag::kComm, alloc);
  float* x = in.data<float>();
  for (int q = 0; q < n; ++q) {
    for (int64_t i = 0; i < send[q]; ++i) *x++ = value(r, q, i);
  }
  before();
  EXPECT_TRUE(world.AllToAllV(in, send, out, recv)->Wait().ok());
  // Overwrite the input at once (a caller may): a peer still reading it would get these.
  in.Fill(-1.0f);
  int64_t wrong = 0;
  const float* y = out.data<float>();
  for (int q = 0; q < n; ++q) {
    for (int64_t i = 0; i < recv[q]; ++i) wrong += *y++ != value(q, r, i);
  }
  return wrong;
}

// One rank arrives 30 ms late to every call: the others' fast path gives up after its patience
// and the progress thread resumes the call where it stopped.
TEST(MpiCollectivesTest, LateRankResumesSuspendedCalls) {
  std::unique_ptr<Communicator> world = World(Sweep());
  const int n = world->size(), r = world->rank();
  int call = 0;
  auto maybe_late = [&] {
    if (r == call++ % n) std::this_thread::sleep_for(std::chrono::milliseconds(30));
  };
  for (int64_t count : {int64_t{3}, int64_t{20000}}) {
    Tensor in = Tensor::Empty({count}, DType::kF32, MemoryTag::kComm);
    in.Fill(static_cast<float>(r + 1));
    Tensor out = Tensor::Zeros({count}, DType::kF32, MemoryTag::kComm);
    maybe_late();
    ASSERT_TRUE(world->AllReduce(in, out, ReduceOp::kSum)->Wait().ok());
    EXPECT_EQ(out.data<float>()[count - 1], n * (n + 1) / 2.0f);
    Tensor gathered = Tensor::Zeros({count * n}, DType::kF32, MemoryTag::kComm);
    maybe_late();
    ASSERT_TRUE(world->AllGather(in, gathered)->Wait().ok());
    for (int q = 0; q < n; ++q) EXPECT_EQ(gathered.data<float>()[q * count], q + 1.0f);
    Tensor block = Tensor::Zeros({count / n}, DType::kF32, MemoryTag::kComm);
    Tensor rs_in = Tensor::Empty({(count / n) * n}, DType::kF32, MemoryTag::kComm);
    rs_in.Fill(1.0f);
    maybe_late();
    ASSERT_TRUE(world->ReduceScatter(rs_in, block, ReduceOp::kSum)->Wait().ok());
    if (count / n > 0) {
      EXPECT_EQ(block.data<float>()[0], static_cast<float>(n));
    }
    Tensor b = Tensor::Empty({count}, DType::kF32, MemoryTag::kComm);
    b.Fill(static_cast<float>(r));
    maybe_late();
    ASSERT_TRUE(world->Broadcast(b, n - 1)->Wait().ok());
    EXPECT_EQ(b.data<float>()[count / 2], n - 1.0f);
    maybe_late();
    ASSERT_TRUE(world->Barrier()->Wait().ok());
    // From the heap (staged), and from the arena where there is one (read in place: the
    // displacement table a suspended call published must stay where its peers read it).
    EXPECT_EQ(CheckedAllToAllV(*world, nullptr, count, maybe_late), 0) << "heap, count " << count;
    if (world->shared_allocator() != nullptr) {
      EXPECT_EQ(CheckedAllToAllV(*world, world->shared_allocator(), count, maybe_late), 0)
          << "arena, count " << count;
    }
  }
  SyncRanks();
}

TEST(MpiCollectivesTest, SkippedCollectiveTimesOutNamingTheMissingRank) {
  std::unique_ptr<Communicator> world = World(FailFast());
  const int n = world->size(), r = world->rank();
  const int missing = n - 1;
  Tensor t = Tensor::Zeros({4099}, DType::kF32, MemoryTag::kComm);
  ASSERT_TRUE(world->AllReduce(t, t, ReduceOp::kSum)->Wait().ok());
  if (r != missing) {  // the last rank skips collective #1
    const auto start = std::chrono::steady_clock::now();
    const absl::Status first = world->AllReduce(t, t, ReduceOp::kSum)->Wait();
    const absl::Status second = world->Barrier()->Wait();
    EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(20));
    EXPECT_EQ(first.code(), absl::StatusCode::kDeadlineExceeded) << first;
    EXPECT_NE(first.message().find("AllReduce(f32, count 4099, sum) #1"), std::string::npos)
        << first;
    EXPECT_NE(first.message().find(absl::StrCat("waiting for rank(s) ", missing)),
              std::string::npos)
        << first;
    EXPECT_NE(second.message().find("poisoned"), std::string::npos) << second;
    EXPECT_EQ(world->poison().code(), absl::StatusCode::kDeadlineExceeded);
  }
  SyncRanks();  // the skipping rank waits here until the others have timed out
}

TEST(MpiCollectivesTest, FingerprintMismatchNamesEachRanksCount) {
  CommOptions o = FailFast();
  o.check_fingerprints = true;
  std::unique_ptr<Communicator> world = World(o);
  const int r = world->rank();
  Tensor t = Tensor::Zeros({r == 0 ? 4099 : 4098}, DType::kF32, MemoryTag::kComm);
  const absl::Status s = world->AllReduce(t, t, ReduceOp::kSum)->Wait();
  EXPECT_EQ(s.code(), absl::StatusCode::kFailedPrecondition) << s;
  EXPECT_NE(s.message().find("rank 0 AllReduce(f32, count 4099, sum); rank 1 "
                             "AllReduce(f32, count 4098, sum)"),
            std::string::npos)
      << s;
  SyncRanks();
}

// The shm backend's shared arena: the sweep with every buffer in it (all-gathers write straight
// into the peers' outputs; LOOM_SHM_REGISTERED_BYTES=0 takes that path at every size), and with
// only rank 0's buffers in it (every rank must then agree on the staged path).
TEST(MpiCollectivesTest, CollectiveSweepOnSharedBuffers) {
  if (Backend() != "shm") GTEST_SKIP() << "the arena belongs to the shm backend";
  setenv("LOOM_SHM_ARENA_BYTES", "67108864", 1);
  setenv("LOOM_SHM_REGISTERED_BYTES", "0", 1);
  std::unique_ptr<Communicator> world = World(Sweep());
  unsetenv("LOOM_SHM_ARENA_BYTES");
  unsetenv("LOOM_SHM_REGISTERED_BYTES");
  ASSERT_NE(world->shared_allocator(), nullptr);
  testing::SweepOptions all;
  all.allocator = world->shared_allocator();
  testing::RunCollectiveSweep(*world, all);
  testing::SweepOptions some;
  if (world->rank() == 0) some.allocator = world->shared_allocator();
  some.counts = {1, 257, 4099};
  testing::RunCollectiveSweep(*world, some);
  SyncRanks();
}

// The bytes committed in the shared arenas this process has open: the tmpfs blocks of every
// "/dev/shm/loom-arena-..." file among its descriptors (an arena keeps its descriptor; the file is
// unlinked once mapped, and all ranks share one). Only this job's arenas count, so other
// processes' use of /dev/shm (tests running beside this one) does not move it.
int64_t ArenaCommittedBytes() {
  int64_t bytes = 0;
  std::set<std::pair<dev_t, ino_t>> seen;
  for (const auto& entry : std::filesystem::directory_iterator("/proc/self/fd")) {
    std::error_code error;
    const std::string target = std::filesystem::read_symlink(entry.path(), error).string();
    if (error || target.rfind("/dev/shm/loom-arena-", 0) != 0) continue;
    struct stat st;
    if (stat(entry.path().c_str(), &st) != 0) continue;
    if (seen.insert({st.st_dev, st.st_ino}).second) bytes += int64_t{st.st_blocks} * 512;
  }
  return bytes;
}

// Free bytes of /dev/shm, or -1.
int64_t DevShmFreeBytes() {
  struct statvfs st;
  if (statvfs("/dev/shm", &st) != 0) return -1;
  return static_cast<int64_t>(st.f_bavail) * static_cast<int64_t>(st.f_frsize);
}

// The arena only reserves address space: creating a communicator with a large arena commits
// next to nothing; allocating a tensor from it (Tensor::Empty: nothing written) commits its bytes;
// freeing it keeps them for the next allocation; one larger than the region comes from the heap
// (committing nothing) and still takes part in collectives.
TEST(MpiCollectivesTest, SharedArenaCommitsMemoryOnlyForWhatIsAllocated) {
  if (Backend() != "shm") GTEST_SKIP() << "the arena belongs to the shm backend";
  constexpr int64_t kMiB = int64_t{1} << 20;
  SyncRanks();
  const int64_t before = ArenaCommittedBytes();
  setenv("LOOM_SHM_ARENA_BYTES", absl::StrCat(8192 * kMiB).c_str(), 1);
  std::unique_ptr<Communicator> world = World(Sweep());
  unsetenv("LOOM_SHM_ARENA_BYTES");
  ASSERT_NE(world->shared_allocator(), nullptr);
  const int n = world->size();
  SyncRanks();
  const int64_t created = ArenaCommittedBytes();
  // 8 GiB reserved per rank.
  EXPECT_LT(created - before, 256 * kMiB) << "the arena committed its reservation up front";

  // 256 MiB per rank, when /dev/shm has room for it beside the arena's headroom (a quarter).
  if (DevShmFreeBytes() < 4 * n * 256 * kMiB) {
    std::printf("skipping the commit checks: /dev/shm has %lld bytes free\n",
                static_cast<long long>(DevShmFreeBytes()));
  } else {
    Tensor big =
        Tensor::Empty({64 * kMiB}, DType::kF32, MemoryTag::kComm, world->shared_allocator());
    SyncRanks();
    const int64_t allocated = ArenaCommittedBytes();
    EXPECT_GE(allocated - created, n * 200 * kMiB) << "allocating from the arena committed nothing";
    big = Tensor();
    big = Tensor::Empty({64 * kMiB}, DType::kF32, MemoryTag::kComm, world->shared_allocator());
    SyncRanks();
    EXPECT_LT(ArenaCommittedBytes() - allocated, 64 * kMiB) << "reuse committed again";
    EXPECT_GE(ArenaCommittedBytes() - created, n * 200 * kMiB) << "freeing gave the pages back";
  }
  world.reset();

  // A region too small for the tensor: it comes from the heap and still takes part.
  setenv("LOOM_SHM_ARENA_BYTES", absl::StrCat(kMiB).c_str(), 1);
  world = World(Sweep());
  unsetenv("LOOM_SHM_ARENA_BYTES");
  SyncRanks();
  const int64_t small = ArenaCommittedBytes();
  Tensor in = Tensor::Zeros({kMiB}, DType::kF32, MemoryTag::kComm, world->shared_allocator());
  SyncRanks();
  EXPECT_LT(ArenaCommittedBytes() - small, 2 * kMiB) << "4 MiB did not fit a 1 MiB region";
  float* x = in.data<float>();
  for (int64_t i = 0; i < kMiB; ++i) x[i] = static_cast<float>(i % 100);
  Tensor out = Tensor::Zeros({kMiB}, DType::kF32, MemoryTag::kComm);
  ASSERT_TRUE(world->AllReduce(in, out, ReduceOp::kSum)->Wait().ok());
  int64_t wrong = 0;
  for (int64_t i = 0; i < kMiB; ++i)
    wrong += out.data<float>()[i] != static_cast<float>(n * (i % 100));
  EXPECT_EQ(wrong, 0);
  SyncRanks();
}

// An arena that cannot be mapped (more address space than a process has) leaves the communicator
// working without one, on every rank alike; so does one turned off on a single rank.
TEST(MpiCollectivesTest, CommunicatorWorksWithoutAnArenaItCannotMap) {
  if (Backend() != "shm") GTEST_SKIP() << "the arena belongs to the shm backend";
  // 64 PiB per rank: more than any process's address space (57-bit at most).
  setenv("LOOM_SHM_ARENA_BYTES", absl::StrCat(int64_t{1} << 56).c_str(), 1);
  std::unique_ptr<Communicator> world = World(Sweep());
  unsetenv("LOOM_SHM_ARENA_BYTES");
  EXPECT_EQ(world->shared_allocator(), nullptr);
  Tensor t = Tensor::Zeros({4099}, DType::kF32, MemoryTag::kComm);
  t.data<float>()[4098] = 1.0f;
  ASSERT_TRUE(world->AllReduce(t, t, ReduceOp::kSum)->Wait().ok());
  EXPECT_EQ(t.data<float>()[4098], static_cast<float>(world->size()));
  world.reset();
  // Turned off on one rank only: off on all (creating it is collective; no rank waits for it).
  if (world_rank() == 0) setenv("LOOM_SHM_ARENA_BYTES", "0", 1);
  world = World(Sweep());
  unsetenv("LOOM_SHM_ARENA_BYTES");
  EXPECT_EQ(world->shared_allocator(), nullptr);
  ASSERT_TRUE(world->AllReduce(t, t, ReduceOp::kSum)->Wait().ok());
  SyncRanks();
}

// Without fingerprint checks, ranks that pass different counts on arena buffers must not read
// past a peer's buffer: the registered paths compare the ranks' byte counts first and fail on
// every rank.
TEST(MpiCollectivesTest, CountMismatchOnArenaBuffersFailsOnEveryRank) {
  if (Backend() != "shm") GTEST_SKIP() << "the arena belongs to the shm backend";
  setenv("LOOM_SHM_ARENA_BYTES", "16777216", 1);
  std::unique_ptr<Communicator> world = World(FailFast());
  unsetenv("LOOM_SHM_ARENA_BYTES");
  ASSERT_NE(world->shared_allocator(), nullptr);
  const int n = world->size();
  const int64_t count = world->rank() == 0 ? 16385 : 16384;  // 64 KiB blocks: registered
  Tensor in = Tensor::Zeros({count}, DType::kF32, MemoryTag::kComm, world->shared_allocator());
  Tensor out = Tensor::Zeros({count * n}, DType::kF32, MemoryTag::kComm, world->shared_allocator());
  const absl::Status s = world->AllGather(in, out)->Wait();
  EXPECT_EQ(s.code(), absl::StatusCode::kFailedPrecondition) << s;
  EXPECT_NE(s.message().find("bytes where rank"), std::string::npos) << s;
  // The same for the one-shot all-reduce reading inputs where they lie (4 KiB). Arena tensors go
  // before their communicator.
  in = Tensor();
  out = Tensor();
  setenv("LOOM_SHM_ARENA_BYTES", "16777216", 1);
  world = World(FailFast());
  unsetenv("LOOM_SHM_ARENA_BYTES");
  const int64_t small = world->rank() == 0 ? 1025 : 1024;
  Tensor a = Tensor::Zeros({small}, DType::kF32, MemoryTag::kComm, world->shared_allocator());
  Tensor b = Tensor::Zeros({small}, DType::kF32, MemoryTag::kComm, world->shared_allocator());
  const absl::Status t = world->AllReduce(a, b, ReduceOp::kSum)->Wait();
  EXPECT_EQ(t.code(), absl::StatusCode::kFailedPrecondition) << t;
  SyncRanks();
}

// Round k of a hazard test: every third round, spin k % 7 µs so the ranks reach the call apart.
void Skew(int64_t k) {
  if (k % 3 != 0) return;
  const auto until = std::chrono::steady_clock::now() + std::chrono::microseconds(k % 7);
  while (std::chrono::steady_clock::now() < until) {
  }
}

// A small all-reduce whose input lies in the arena is read by the peers where it lies (and a
// broadcast's receivers copy out of the root's buffer, an all-to-all's out of every input): the
// call must not return before every peer has read it. Each rank rewrites its input the moment a
// call returns (a caller may), with values that change every round; a peer still reading the old
// input would sum the new values and miss the exact expectation. Ranks are skewed on purpose (rank
// 0 never waits; the others sometimes spin first) so some calls find the peers late.
TEST(MpiCollectivesTest, InputsReadInPlaceStayUntilEveryPeerHasRead) {
  if (Backend() != "shm") GTEST_SKIP() << "the arena belongs to the shm backend";
  setenv("LOOM_SHM_ARENA_BYTES", "1048576", 1);
  std::unique_ptr<Communicator> world = World(Sweep());
  unsetenv("LOOM_SHM_ARENA_BYTES");
  ASSERT_NE(world->shared_allocator(), nullptr);
  const int n = world->size(), r = world->rank();
  constexpr int64_t kCount = 1024;  // 4 KiB of f32: one-shot, read in place
  Tensor in = Tensor::Zeros({kCount}, DType::kF32, MemoryTag::kComm, world->shared_allocator());
  Tensor out = Tensor::Zeros({kCount}, DType::kF32, MemoryTag::kComm, world->shared_allocator());
  // Round k, rank q, element i holds (k * 7 + q * 3 + i) % 1000: small integers, exact sums.
  auto value = [](int64_t k, int q, int64_t i) {
    return static_cast<float>((k * 7 + q * 3 + i) % 1000);
  };
  int64_t wrong = 0;
  for (int64_t k = 0; k < 2000; ++k) {
    float* x = in.data<float>();
    for (int64_t i = 0; i < kCount; ++i) x[i] = value(k, r, i);
    if (r != 0) Skew(k);
    ASSERT_TRUE(world->AllReduce(in, out, ReduceOp::kSum)->Wait().ok());
    // Overwrite the input at once, before checking anything.
    for (int64_t i = 0; i < kCount; ++i) x[i] = -1.0f;
    const float* y = out.data<float>();
    for (int64_t i = 0; i < kCount; ++i) {
      float expected = 0;
      for (int q = 0; q < n; ++q) expected += value(k, q, i);
      if (y[i] != expected) ++wrong;
    }
  }
  EXPECT_EQ(wrong, 0);
  // The same for a broadcast: the receivers copy straight out of the root's arena buffer, which
  // the root rewrites the moment the call returns.
  wrong = 0;
  for (int64_t k = 0; k < 2000; ++k) {
    const int root = static_cast<int>(k % n);
    float* x = in.data<float>();
    if (r == root) {
      for (int64_t i = 0; i < kCount; ++i) x[i] = value(k, root, i);
    } else {
      Skew(k);
    }
    ASSERT_TRUE(world->Broadcast(in, root)->Wait().ok());
    if (r == root) {
      for (int64_t i = 0; i < kCount; ++i) x[i] = -1.0f;
    } else {
      for (int64_t i = 0; i < kCount; ++i) wrong += x[i] != value(k, root, i);
    }
  }
  EXPECT_EQ(wrong, 0);
  // And an all-to-all: every rank copies its block straight out of every peer's input.
  const int64_t block = kCount / n;
  Tensor in2 = in.Slice(0, block * n), out2 = out.Slice(0, block * n);
  wrong = 0;
  for (int64_t k = 0; k < 2000; ++k) {
    float* x = in2.data<float>();
    for (int64_t i = 0; i < block * n; ++i) x[i] = value(k, r, i);
    if (r != 0) Skew(k);
    ASSERT_TRUE(world->AllToAll(in2, out2)->Wait().ok());
    for (int64_t i = 0; i < block * n; ++i) x[i] = -1.0f;
    const float* y = out2.data<float>();
    for (int q = 0; q < n; ++q) {  // block q came from rank q's block r
      for (int64_t i = 0; i < block; ++i) wrong += y[q * block + i] != value(k, q, r * block + i);
    }
  }
  EXPECT_EQ(wrong, 0);
  // And an all-to-all with per-peer counts (MoE's exchanges), read out of each peer's input.
  wrong = 0;
  for (int64_t k = 0; k < 500; ++k) {
    wrong += CheckedAllToAllV(*world, world->shared_allocator(), 100 + k % 5, [&] {
      if (r != 0) Skew(k);
    });
  }
  EXPECT_EQ(wrong, 0);
  // In place on arena buffers: the staged path (a rank's output would overwrite what its peers
  // read).
  for (int64_t i = 0; i < block * n; ++i) in2.data<float>()[i] = value(7, r, i);
  ASSERT_TRUE(world->AllToAll(in2, in2)->Wait().ok());
  for (int q = 0; q < n; ++q) {
    for (int64_t i = 0; i < block; ++i) {
      EXPECT_EQ(in2.data<float>()[q * block + i], value(7, q, r * block + i)) << q << " " << i;
    }
  }
  SyncRanks();
}

// Another user on the host can neither attach to a job's collectives nor read its gradients:
// every shared-memory segment the shm backend maps (its rings and its arena) is owner-only (0600),
// has an unpredictable name ("/loom-<purpose>-<pid>-<n>-<16 hex digits of random>") and is already
// unlinked, so nothing in /dev/shm leads to it. Read from /proc/self/maps and map_files (root).
TEST(MpiCollectivesTest, SharedSegmentsAreUnlinkedOwnerOnlyAndUnguessable) {
  if (Backend() != "shm") GTEST_SKIP() << "the segments belong to the shm backend";
  std::unique_ptr<Communicator> world = World(Sweep());
  ASSERT_NE(world->shared_allocator(), nullptr);  // the arena too
  SyncRanks();  // rank 0 unlinks each segment once every rank has mapped it, then returns
  std::ifstream maps("/proc/self/maps");
  int segments = 0;
  for (std::string line; std::getline(maps, line);) {
    const size_t at = line.find("/dev/shm/loom-");
    if (at == std::string::npos) continue;
    ++segments;
    const std::string name = line.substr(at + 9);                   // "loom-..." and " (deleted)"
    EXPECT_NE(name.find(" (deleted)"), std::string::npos) << line;  // unlinked
    const std::string base = name.substr(0, name.find(' '));
    const size_t dash = base.rfind('-');
    ASSERT_NE(dash, std::string::npos) << base;
    const std::string nonce = base.substr(dash + 1);
    EXPECT_EQ(nonce.find_first_not_of("0123456789abcdef"), std::string::npos) << base;
    EXPECT_GE(nonce.size(), 12u) << base;  // 64 random bits (absl::Hex drops leading zeros)
    if (::geteuid() != 0) continue;        // map_files needs CAP_SYS_ADMIN
    struct stat st;
    const std::string range = line.substr(0, line.find(' '));
    ASSERT_EQ(::stat(("/proc/self/map_files/" + range).c_str(), &st), 0) << range;
    EXPECT_EQ(st.st_mode & 0777, 0600u) << base;
  }
  EXPECT_GE(segments, 2) << "expected the communicator's rings and its arena";
}

TEST(MpiCollectivesTest, UnknownBackendNamesTheChoices) {
  const absl::StatusOr<std::unique_ptr<Communicator>> c = MakeWorldCommunicator("nccl2", {});
  EXPECT_EQ(c.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(c.status().message().find("\"mpi\""), std::string::npos) << c.status();
  EXPECT_NE(c.status().message().find("\"shm\""), std::string::npos) << c.status();
  EXPECT_NE(c.status().message().find("\"nccl\""), std::string::npos) << c.status();
}

// The nccl world needs the CUDA backend, a GPU, and a GPU per rank: without them it fails at once
// on every rank saying which (a build without CUDA; no visible GPU; ranks sharing one).
TEST(MpiCollectivesTest, NcclWorldSaysWhatItNeeds) {
  const absl::StatusOr<std::unique_ptr<Communicator>> c = MakeWorldCommunicator("nccl", {});
  if (c.ok()) GTEST_SKIP() << "every rank has its own GPU here";
  EXPECT_NE(c.status().message().find("CUDA"), std::string::npos) << c.status();
}

}  // namespace
}  // namespace loom::comm
