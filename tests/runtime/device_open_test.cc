// Opening a device by name (runtime/device_open.h) and the GPU peak table MFU uses.
#include "runtime/device_open.h"

#include <gtest/gtest.h>

#include <string>

namespace loom::runtime {
namespace {

TEST(OpenDevice, CpuIsTheHostAndOtherNamesAreRefused) {
  absl::StatusOr<OpenedDevice> cpu = OpenDevice("cpu");
  ASSERT_TRUE(cpu.ok()) << cpu.status();
  EXPECT_EQ(cpu->allocator, nullptr);
  EXPECT_EQ(cpu->description, "host");
  EXPECT_EQ(cpu->visible, 0);
  absl::StatusOr<OpenedDevice> tpu = OpenDevice("tpu");
  EXPECT_FALSE(tpu.ok());
  EXPECT_EQ(tpu.status().message(), "--device must be cpu or cuda, got 'tpu'");
}

// With a GPU (and the CUDA backend) "cuda" opens it; otherwise it says which of the two is missing.
TEST(OpenDevice, CudaOpensAGpuOrSaysWhatIsMissing) {
  absl::StatusOr<OpenedDevice> cuda = OpenDevice("cuda");
  if (cuda.ok()) {
    EXPECT_NE(cuda->allocator, nullptr);
    EXPECT_EQ(cuda->allocator->source().device, Device::kCuda);
    EXPECT_GE(cuda->visible, 1);
    return;
  }
  const std::string why(cuda.status().message());
  EXPECT_TRUE(why.find("no CUDA device is visible") != std::string::npos ||
              why.find("this build has no CUDA backend") != std::string::npos)
      << why;
}

// Dense bf16 tensor-core peaks from the vendors' data sheets (TFLOP/s without sparsity: H100 and
// H200 SXM 989.4, H100 PCIe 756, H20 148, A100 312, L40S 362.05, L4 121), by CUDA device name.
TEST(DenseBf16PeakGflops, KnownGpusByName) {
  EXPECT_EQ(DenseBf16PeakGflops("NVIDIA H200"), 989'400);
  EXPECT_EQ(DenseBf16PeakGflops("NVIDIA H100 80GB HBM3"), 989'400);
  EXPECT_EQ(DenseBf16PeakGflops("NVIDIA H100 PCIe"), 756'000);
  EXPECT_EQ(DenseBf16PeakGflops("NVIDIA H20"), 148'000);
  EXPECT_EQ(DenseBf16PeakGflops("NVIDIA A100-SXM4-80GB"), 312'000);
  EXPECT_EQ(DenseBf16PeakGflops("NVIDIA L40S"), 362'050);
  EXPECT_EQ(DenseBf16PeakGflops("NVIDIA L4"), 121'000);
  EXPECT_EQ(DenseBf16PeakGflops("Quadro P1000"), 0.0);
}

}  // namespace
}  // namespace loom::runtime
