// Parallel layouts with the model on a device, without a GPU: every rank's training state on an
// emulated CUDA device (tests/runtime/emulated_device.h), the collectives between the ranks'
// device tensors staged through host memory (comm::Communicator). Each layout must give bitwise
// the same losses, gradient norms and final parameters as the same layout on the host: the
// staging moves the same bytes through the same host collectives, in the same order. (That the
// host layouts equal the single-rank run is data_parallel_test's and the tp/pp tests' job.) The
// same again over the nccl backend on a fake NCCL (NcclLayouts, below).
#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <memory>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "comm/nccl/nccl_backend.h"
#include "tests/comm/fake_nccl.h"
#include "tests/parallel/dp_checks.h"
#include "tests/runtime/emulated_device.h"

namespace loom::testing {
namespace {

struct Layout {
  std::string name;
  int dp = 1, tp = 1, pp = 1;
  int zero = 0;
  std::string precision = "fp32";
  bool sequence_parallel = false;
  int hsdp_shard = 0;
  // Expert parallelism (preset tiny-moe when ep > 1): the dispatch's wire dtype, node-limited
  // groups with the hierarchical dispatch, and the dual micro-batch overlap.
  int ep = 1;
  std::string moe_dispatch = "fp32";
  int moe_groups = 0;
  bool moe_dual_batch = false;
  bool moe_fold_tp = false;  // the experts split over ep x tp (also with ep 1)
};

// The reference options, 4 steps, in layout `l`.
models::TrainOptions OptionsFor(const Layout& l) {
  models::TrainOptions o = ReferenceOptions();
  o.steps = 4;
  o.dp = l.dp;
  o.tp = l.tp;
  o.pp = l.pp;
  o.zero = l.zero;
  o.precision = l.precision;
  o.sequence_parallel = l.sequence_parallel;
  o.hsdp_shard = l.hsdp_shard;
  if (l.pp > 1) o.micro_batches = 4;
  if (l.ep > 1 || l.moe_fold_tp) {
    o.preset = "tiny-moe";
    o.moe_fold_tp = l.moe_fold_tp;
    o.ep = l.ep;
    o.moe_dispatch = l.moe_dispatch;
    o.moe_groups = l.moe_groups;
    o.moe_top_groups = l.moe_groups > 0 ? 1 : 0;
    o.moe_hier_dispatch = l.moe_groups > 0;
    o.moe_dual_batch = l.moe_dual_batch;
  }
  return o;
}

// Every rank's losses, gradient norms and final parameters, bitwise.
void ExpectSameBits(const std::vector<RunResult>& on_device, const std::vector<RunResult>& host) {
  ASSERT_EQ(on_device.size(), host.size());
  for (size_t r = 0; r < host.size(); ++r) {
    EXPECT_EQ(on_device[r].losses, host[r].losses) << "rank " << r;
    EXPECT_EQ(on_device[r].grad_norms, host[r].grad_norms) << "rank " << r;
    EXPECT_EQ(on_device[r].params, host[r].params) << "rank " << r;
  }
}

class DeviceLayouts : public ::testing::TestWithParam<Layout> {};

TEST_P(DeviceLayouts, EqualTheSameLayoutOnTheHost) {
  models::TrainOptions o = OptionsFor(GetParam());
  const std::vector<RunResult> host = TrainOnMesh(o);
  runtime::testing::EmulatedDevice device;
  o.device = &device.allocator();
  ExpectSameBits(TrainOnMesh(o), host);
}

// The layouts the nccl backend runs (no pipeline: its sends are not buffered), and the others.
std::vector<Layout> NcclRunnableLayouts() {
  return {Layout{.name = "dp2", .dp = 2},
          Layout{.name = "dp2_zero1_bf16", .dp = 2, .zero = 1, .precision = "bf16"},
          Layout{.name = "dp2_zero3", .dp = 2, .zero = 3},
          Layout{.name = "hsdp_2x2_zero2", .dp = 4, .zero = 2, .hsdp_shard = 2},
          Layout{.name = "tp2_sp", .tp = 2, .sequence_parallel = true},
          Layout{.name = "dp2_tp2", .dp = 2, .tp = 2, .zero = 1},
          Layout{.name = "ep2", .ep = 2},
          Layout{.name = "ep2_fp8_dispatch", .ep = 2, .moe_dispatch = "fp8"}};
}

std::vector<Layout> AllLayouts() {
  std::vector<Layout> layouts = NcclRunnableLayouts();
  for (const Layout& l :
       {Layout{.name = "pp2", .pp = 2}, Layout{.name = "pp2_dp2", .dp = 2, .pp = 2},
        Layout{.name = "ep2_dp2_zero1", .dp = 2, .zero = 1, .ep = 2},
        Layout{.name = "ep2_tp2_sp", .tp = 2, .sequence_parallel = true, .ep = 2},
        Layout{.name = "ep2_tp2", .tp = 2, .ep = 2},
        Layout{.name = "ep2_tp2_folded", .tp = 2, .ep = 2, .moe_fold_tp = true},
        Layout{.name = "ep4_hierarchical", .ep = 4, .moe_groups = 2},
        Layout{.name = "ep4_hierarchical_fp8", .ep = 4, .moe_dispatch = "fp8", .moe_groups = 2},
        Layout{.name = "ep2_dual_batch", .ep = 2, .moe_dual_batch = true}}) {
    layouts.push_back(l);
  }
  return layouts;
}

std::string LayoutName(const ::testing::TestParamInfo<Layout>& info) { return info.param.name; }

INSTANTIATE_TEST_SUITE_P(Layouts, DeviceLayouts, ::testing::ValuesIn(AllLayouts()), LayoutName);

// The same layouts over the nccl backend (comm/nccl) on a fake NCCL (tests/comm/fake_nccl.h) whose
// operations are the thread-rank backend's on host copies: device tensors go to the backend as
// they are, host tensors (the trainer's scalars) are staged through the device, splits make the
// mesh's groups. The same host collectives run underneath, so the results must again be bitwise
// the host layout's (expert parallelism: the rows' all-to-alls as grouped sends and receives, the
// expert indices and gates, host tensors, staged through the device). (Pipeline layouts are
// refused with --comm nccl: its sends are not buffered.)
// Every rank of `o` (o.device set) on its thread over the nccl backend on `fake`.
std::vector<RunResult> TrainOnFakeNccl(const models::TrainOptions& o,
                                       comm::testing::FakeNcclWorld& fake) {
  const int n = o.dp * o.tp * o.ep;
  std::vector<std::unique_ptr<comm::Communicator>> bootstrap = comm::MakeLocalWorld(n);
  std::vector<RunResult> results(static_cast<size_t>(n));
  std::vector<std::thread> threads;
  for (int r = 0; r < n; ++r) {
    threads.emplace_back([&, r] {
      const comm::Deadline deadline{std::chrono::steady_clock::now() + std::chrono::seconds(60)};
      absl::StatusOr<std::unique_ptr<comm::Backend>> backend =
          comm::MakeNcclBackend(&fake.rank(r), std::move(bootstrap[r]), deadline);
      ASSERT_TRUE(backend.ok()) << backend.status();
      comm::Communicator world(std::move(backend).value(), comm::CommOptions{});
      auto mesh =
          parallel::Mesh::Create(world, parallel::MeshShape{.dp = o.dp, .tp = o.tp, .ep = o.ep});
      ASSERT_TRUE(mesh.ok()) << mesh.status();
      results[r] = Train(o, parallel::ParallelContext::FromMesh(**mesh));
    });
  }
  for (std::thread& t : threads) t.join();
  return results;
}

class NcclLayouts : public ::testing::TestWithParam<Layout> {};

TEST_P(NcclLayouts, EqualTheSameLayoutOnTheHost) {
  models::TrainOptions o = OptionsFor(GetParam());
  const std::vector<RunResult> host = TrainOnMesh(o);
  runtime::testing::EmulatedDevice device;
  o.device = &device.allocator();
  comm::testing::FakeNcclWorld fake(o.dp * o.tp * o.ep, &device.allocator());
  ExpectSameBits(TrainOnFakeNccl(o, fake), host);
}

// Ordered issue (DataParallel::Options::ordered_issue, on by itself over NCCL): with one shard
// group's reduce-scatters held back, so that they complete at other points of the program than
// the other group's, every rank still makes, and with the backend's tickets queues, the same
// sequence of NCCL operations over all its communicators (HSDP 2 x 2, ZeRO-2: reduce-scatters in
// the shard group, all-reduces across replicas, the trainer's reductions). Issued where a Test()
// saw a reduce-scatter complete (ordered issue off), the all-reduces across replicas fall
// elsewhere on each group's ranks, and this fails.
TEST(NcclOrderedIssue, EveryRankQueuesTheSameSequenceOfOperations) {
  models::TrainOptions o = OptionsFor(Layout{.name = "hsdp", .dp = 4, .zero = 2, .hsdp_shard = 2});
  o.steps = 2;
  runtime::testing::EmulatedDevice device;
  o.device = &device.allocator();
  comm::testing::FakeNcclWorld fake(4, &device.allocator());
  // The second shard group's reduce-scatters come late: there, a Test() would see them complete
  // only at the end of backward, in the first group while backward still runs.
  for (int r = 2; r < 4; ++r) {
    fake.rank(r).before_queue = [](const char* op) {
      if (std::string_view(op) == "ReduceScatter") {
        std::this_thread::sleep_for(std::chrono::milliseconds(30));
      }
    };
  }
  const std::vector<RunResult> results = TrainOnFakeNccl(o, fake);
  ASSERT_EQ(results[0].losses.size(), 2u);
  std::vector<std::vector<std::string>> ops(4);
  for (int r = 0; r < 4; ++r) {
    for (const std::string& entry : fake.rank(r).log()) {
      if (entry != "record default" && entry != "record comm" && entry != "wait") {
        ops[r].push_back(entry);
      }
    }
  }
  EXPECT_GT(std::count(ops[0].begin(), ops[0].end(), "ReduceScatter"), 2);
  for (int r = 1; r < 4; ++r) EXPECT_EQ(ops[r], ops[0]) << "rank " << r;
}

INSTANTIATE_TEST_SUITE_P(Layouts, NcclLayouts, ::testing::ValuesIn(NcclRunnableLayouts()),
                         LayoutName);

}  // namespace
}  // namespace loom::testing
