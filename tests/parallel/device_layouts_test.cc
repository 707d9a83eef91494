// Parallel layouts with the model on a device, without a GPU: every rank's training state on an
// emulated CUDA device (tests/runtime/emulated_device.h), the collectives between the ranks'
// device tensors staged through host memory (comm::Communicator). Each layout must give bitwise
// the same losses, gradient norms and final parameters as the same layout on the host: the
// staging moves the same bytes through the same host collectives, in the same order. (That the
// host layouts equal the single-rank run is data_parallel_test's and the tp/pp tests' job.)
#include <gtest/gtest.h>

#include <string>
#include <vector>

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
};

class DeviceLayouts : public ::testing::TestWithParam<Layout> {};

TEST_P(DeviceLayouts, EqualTheSameLayoutOnTheHost) {
  const Layout& l = GetParam();
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
  const std::vector<RunResult> host = TrainOnMesh(o);
  runtime::testing::EmulatedDevice device;
  o.device = &device.allocator();
  const std::vector<RunResult> on_device = TrainOnMesh(o);
  ASSERT_EQ(on_device.size(), host.size());
  for (size_t r = 0; r < host.size(); ++r) {
    EXPECT_EQ(on_device[r].losses, host[r].losses) << "rank " << r;
    EXPECT_EQ(on_device[r].grad_norms, host[r].grad_norms) << "rank " << r;
    EXPECT_EQ(on_device[r].params, host[r].params) << "rank " << r;
  }
}

INSTANTIATE_TEST_SUITE_P(
    Layouts, DeviceLayouts,
    ::testing::Values(Layout{.name = "dp2", .dp = 2},
                      Layout{.name = "dp2_zero1_bf16", .dp = 2, .zero = 1, .precision = "bf16"},
                      Layout{.name = "dp2_zero3", .dp = 2, .zero = 3},
                      Layout{.name = "hsdp_2x2_zero2", .dp = 4, .zero = 2, .hsdp_shard = 2},
                      Layout{.name = "tp2_sp", .tp = 2, .sequence_parallel = true},
                      Layout{.name = "dp2_tp2", .dp = 2, .tp = 2, .zero = 1},
                      Layout{.name = "pp2", .pp = 2}, Layout{.name = "pp2_dp2", .dp = 2, .pp = 2}),
    [](const ::testing::TestParamInfo<Layout>& info) { return info.param.name; });

}  // namespace
}  // namespace loom::testing
