// The real NCCL on one GPU (label gpu; skips without one): a one-rank NCCL communicator through the
// collective sweep on device tensors and on host tensors staged through the device, its split
// included. More ranks need a GPU each (NCCL refuses two ranks on one), which the one-GPU check
// machine does not have; their logic is tested against a fake NCCL (comm_nccl_test).
#include <gtest/gtest.h>

#include "comm/local/local_backend.h"
#include "comm/nccl/api.h"
#include "comm/nccl/nccl_backend.h"
#include "runtime/kernels/cuda/device.h"
#include "tests/comm/collective_checks.h"

namespace loom::comm {
namespace {

TEST(NcclGpuTest, OneRankSweep) {
  if (runtime::kernels::cuda::DeviceCount() == 0) {
    GTEST_SKIP() << "no CUDA device: NCCL is not run";
  }
  absl::StatusOr<nccl::Api*> api = nccl::NcclApi();
  ASSERT_TRUE(api.ok()) << api.status();
  std::printf("%s\n", (*api)->Version().c_str());
  const Deadline deadline{std::chrono::steady_clock::now() + std::chrono::seconds(60)};
  absl::StatusOr<std::unique_ptr<Backend>> backend =
      MakeNcclBackend(*api, std::move(MakeLocalWorld(1)[0]), deadline);
  ASSERT_TRUE(backend.ok()) << backend.status();
  CommOptions options;
  options.abort_on_error = false;
  options.timeout = absl::Seconds(60);
  Communicator comm(std::move(backend).value(), options);
  testing::SweepOptions sweep;
  sweep.buffered_send = false;
  sweep.allocator = &runtime::kernels::cuda::DeviceAllocator();
  testing::RunCollectiveSweep(comm, sweep);
  sweep.allocator = nullptr;
  sweep.counts = {0, 7, 4099};
  testing::RunCollectiveSweep(comm, sweep);
}

}  // namespace
}  // namespace loom::comm
