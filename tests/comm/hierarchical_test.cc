// The hierarchical backend (reduce-scatter inside each host, all-reduce across hosts, all-gather
// inside) over the ring backend on thread-ranks, with 'hosts' simulated by host ids: the shared
// collective sweep with exact expected values for several host shapes (contiguous, interleaved,
// uneven and degenerate ones that fall back to the flat path), bitwise equality with the flat
// backend on data whose sums are exact, identical bytes on every rank for arbitrary floats, and
// the point of it all: only one block per rank crosses hosts.
#include "comm/hierarchical.h"

#include <gtest/gtest.h>

#include <atomic>
#include <functional>
#include <random>

#include "absl/strings/str_cat.h"
#include "comm/local/local_p2p.h"
#include "comm/p2p_backend.h"
#include "runtime/tensor.h"
#include "tests/comm/collective_checks.h"
#include "tests/comm/p2p_test_util.h"

namespace loom::comm {
namespace {

using runtime::DType;
using runtime::MemoryTag;
using runtime::Tensor;
using testing::OnThreads;

using HostOf = std::function<int(int)>;  // world rank -> host id

Deadline Generous() { return {std::chrono::steady_clock::now() + std::chrono::seconds(60)}; }

// Wraps a transport and adds up the bytes it sends to ranks on other hosts (its Split children
// count into the same total), to observe what a hierarchy keeps off the inter-host links.
class CountingP2P : public PointToPoint {
 public:
  CountingP2P(std::unique_ptr<PointToPoint> inner, std::vector<int> world_ranks, HostOf host_of,
              std::shared_ptr<std::atomic<int64_t>> cross_host_bytes)
      : inner_(std::move(inner)),
        world_ranks_(std::move(world_ranks)),
        host_of_(std::move(host_of)),
        cross_host_bytes_(std::move(cross_host_bytes)) {}

  int rank() const override { return inner_->rank(); }
  int size() const override { return inner_->size(); }

  absl::Status SendRecv(const void* send, size_t send_bytes, int dst, void* recv, size_t recv_bytes,
                        int src, int tag, Deadline deadline) override {
    if (dst != kNoPeer && host_of_(world_ranks_[dst]) != host_of_(world_ranks_[rank()])) {
      cross_host_bytes_->fetch_add(static_cast<int64_t>(send_bytes));
    }
    return inner_->SendRecv(send, send_bytes, dst, recv, recv_bytes, src, tag, deadline);
  }

  absl::StatusOr<std::unique_ptr<PointToPoint>> Split(const std::vector<int>& members,
                                                      Deadline deadline) override {
    absl::StatusOr<std::unique_ptr<PointToPoint>> child = inner_->Split(members, deadline);
    if (!child.ok()) return child.status();
    std::vector<int> world;
    for (int m : members) world.push_back(world_ranks_[m]);
    return std::unique_ptr<PointToPoint>(
        new CountingP2P(std::move(child).value(), world, host_of_, cross_host_bytes_));
  }

 private:
  std::unique_ptr<PointToPoint> inner_;
  std::vector<int> world_ranks_;
  HostOf host_of_;
  std::shared_ptr<std::atomic<int64_t>> cross_host_bytes_;
};

// n thread-ranks; rank r on host host_of(r). With `counter`, cross-host bytes are counted.
std::vector<std::unique_ptr<Communicator>> MakeHierarchicalWorld(
    int n, const HostOf& host_of, P2POptions p2p = P2POptions{},
    std::shared_ptr<std::atomic<int64_t>> counter = nullptr) {
  std::vector<std::unique_ptr<PointToPoint>> ranks = MakeLocalPointToPoint(n);
  std::vector<std::unique_ptr<Communicator>> world(static_cast<size_t>(n));
  std::vector<int> identity(n);
  for (int r = 0; r < n; ++r) identity[r] = r;
  OnThreads(n, [&](int r) {
    std::unique_ptr<PointToPoint> transport = std::move(ranks[r]);
    if (counter != nullptr) {
      transport = std::make_unique<CountingP2P>(std::move(transport), identity, host_of, counter);
    }
    absl::StatusOr<std::unique_ptr<Backend>> backend =
        MakeHierarchicalBackend(MakeP2PBackend(std::move(transport), p2p), host_of(r), Generous());
    ASSERT_TRUE(backend.ok()) << backend.status();
    world[r] = std::make_unique<Communicator>(std::move(backend).value(), CommOptions{});
  });
  return world;
}

struct Shape {
  const char* name;
  int n;
  HostOf host_of;
};

const Shape kShapes[] = {
    {"2 hosts x 2", 4, [](int r) { return r / 2; }},
    {"2 hosts x 3", 6, [](int r) { return r / 3; }},
    {"3 hosts x 2", 6, [](int r) { return r / 2; }},
    {"2 hosts x 2, interleaved", 4, [](int r) { return r % 2; }},
    {"2 hosts x 4, host ids 7 and 3", 8, [](int r) { return r < 4 ? 7 : 3; }},
    // Fall back to the flat path for AllReduce:
    {"uneven hosts (2 + 1)", 3, [](int r) { return r < 2 ? 0 : 1; }},
    {"one host", 4, [](int) { return 0; }},
    {"one rank per host", 3, [](int r) { return r; }},
};

TEST(HierarchicalTest, CollectiveSweepOverHostShapes) {
  for (const Shape& shape : kShapes) {
    SCOPED_TRACE(shape.name);
    std::vector<std::unique_ptr<Communicator>> world =
        MakeHierarchicalWorld(shape.n, shape.host_of);
    ASSERT_EQ(world[0]->backend_name(), "hierarchical(ring)");
    testing::SweepOptions options;
    options.counts = {0, 1, 7, 4099};
    if (shape.n == 4) options.counts.push_back(1 << 20);
    OnThreads(shape.n, [&](int r) { testing::RunCollectiveSweep(*world[r], options); });
  }
}

// Every rank's AllReduce of in[r] (count elements of dtype) on `world`; returns the outputs.
std::vector<std::vector<char>> AllReduceEverywhere(
    std::vector<std::unique_ptr<Communicator>>& world, const std::vector<std::vector<double>>& in,
    DType dtype, ReduceOp op) {
  const int n = static_cast<int>(world.size());
  const int64_t count = static_cast<int64_t>(in[0].size());
  std::vector<std::vector<char>> out(n);
  OnThreads(n, [&](int r) {
    Tensor t = Tensor::Empty({count}, dtype, MemoryTag::kComm);
    for (int64_t i = 0; i < count; ++i) testing::Store(dtype, t.raw_data(), i, in[r][i]);
    ASSERT_TRUE(world[r]->AllReduce(t, t, op)->Wait().ok());
    const char* bytes = static_cast<const char*>(t.raw_data());
    out[r].assign(bytes, bytes + count * runtime::DTypeSize(dtype));
  });
  return out;
}

std::vector<std::vector<double>> RandomInputs(int n, int64_t count, bool integers, int max_abs) {
  std::vector<std::vector<double>> in(n, std::vector<double>(count));
  std::mt19937 gen(42);
  std::uniform_int_distribution<int> ints(-max_abs, max_abs);
  std::uniform_real_distribution<double> reals(-1.0, 1.0);
  for (auto& rank : in) {
    for (double& x : rank) x = integers ? ints(gen) : reals(gen);
  }
  return in;
}

TEST(HierarchicalTest, EqualsTheFlatRingBitwiseWhenSumsAreExact) {
  // Integer-valued data: every association order gives the exact sum, so the composed result must
  // match the flat one bit for bit (also for avg, which divides the same exact sum once).
  const Shape& shape = kShapes[1];  // 2 hosts x 3
  std::vector<std::unique_ptr<Communicator>> hier = MakeHierarchicalWorld(shape.n, shape.host_of);
  std::vector<std::unique_ptr<Communicator>> flat = MakeLocalRingWorld(shape.n);
  for (int64_t count : {int64_t{4099}, int64_t{(1 << 16) + 3}}) {
    for (DType dtype : {DType::kF32, DType::kBF16, DType::kI64}) {
      for (ReduceOp op : {ReduceOp::kSum, ReduceOp::kAvg, ReduceOp::kMax}) {
        if (op == ReduceOp::kAvg && !runtime::IsFloatingPoint(dtype)) continue;
        SCOPED_TRACE(absl::StrCat(runtime::DTypeName(dtype), " ", ReduceOpName(op), " ", count));
        // bf16 holds integers exactly up to 256: |sum| <= 6 · 40.
        const auto in = RandomInputs(shape.n, count, true, dtype == DType::kBF16 ? 40 : 100000);
        const auto h = AllReduceEverywhere(hier, in, dtype, op);
        const auto f = AllReduceEverywhere(flat, in, dtype, op);
        for (int r = 0; r < shape.n; ++r) EXPECT_EQ(h[r], f[r]) << "rank " << r;
      }
    }
  }
}

TEST(HierarchicalTest, EveryRankGetsIdenticalBytesForArbitraryFloats) {
  // Float sums associate differently from the flat path (host-local partials first), so only
  // closeness to the exact sum is expected there; across ranks the bytes must be identical.
  for (const Shape& shape : {kShapes[0], kShapes[2]}) {
    std::vector<std::unique_ptr<Communicator>> hier = MakeHierarchicalWorld(shape.n, shape.host_of);
    for (DType dtype : {DType::kF32, DType::kBF16}) {
      const int64_t count = 4099;
      const auto in = RandomInputs(shape.n, count, false, 0);
      const auto out = AllReduceEverywhere(hier, in, dtype, ReduceOp::kSum);
      for (int r = 1; r < shape.n; ++r) EXPECT_EQ(out[r], out[0]) << shape.name << " rank " << r;
      for (int64_t i = 0; i < count; ++i) {
        double exact = 0;
        for (int r = 0; r < shape.n; ++r) exact += testing::Rounded(dtype, in[r][i]);
        ASSERT_NEAR(testing::At(dtype, out[0], i), exact, dtype == DType::kF32 ? 1e-5 : 4e-2)
            << shape.name << " element " << i;
      }
    }
  }
}

TEST(HierarchicalTest, OnlyOneBlockPerRankCrossesHosts) {
  // 2 hosts x 2 ranks, 4096 f32, rings everywhere. Composed: each rank all-reduces its 2048-element
  // block with one peer on the other host: 1024 out in the reduce-scatter + 1024 in the
  // all-gather = 8 KiB per rank, 32 KiB in all. Flat ring 0-1-2-3: the links 1->2 and 3->0 each
  // carry 2·3/4 of the buffer = 24 KiB, 48 KiB in all.
  P2POptions ring;
  ring.all_reduce = P2POptions::AllReduceAlgorithm::kRing;
  const HostOf host_of = [](int r) { return r / 2; };
  auto measure = [&](bool hierarchical) {
    auto counter = std::make_shared<std::atomic<int64_t>>(0);
    std::vector<std::unique_ptr<Communicator>> world;
    if (hierarchical) {
      world = MakeHierarchicalWorld(4, host_of, ring, counter);
    } else {
      std::vector<std::unique_ptr<PointToPoint>> ranks = MakeLocalPointToPoint(4);
      for (int r = 0; r < 4; ++r) {
        auto counted = std::make_unique<CountingP2P>(
            std::move(ranks[r]), std::vector<int>{0, 1, 2, 3}, host_of, counter);
        world.push_back(std::make_unique<Communicator>(MakeP2PBackend(std::move(counted), ring),
                                                       CommOptions{}));
      }
    }
    counter->store(0);  // construction exchanged host ids; count the AllReduce only
    const auto in = RandomInputs(4, 4096, true, 100);
    AllReduceEverywhere(world, in, DType::kF32, ReduceOp::kSum);
    return counter->load();
  };
  EXPECT_EQ(measure(true), 4 * 2048 * 4);
  EXPECT_EQ(measure(false), 2 * 6144 * 4);
}

}  // namespace
}  // namespace loom::comm
