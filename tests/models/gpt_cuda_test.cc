// GPT on the device: the GPT-2 variant (LayerNorm, GELU, tied embedding, vocabulary not a multiple
// of anything; and in f32 the RMSNorm + SwiGLU one) built under
// AllocatorScope(cuda::DeviceAllocator()), so its parameters, gradients and activations live on
// the GPU and every op runs through its CUDA twin, against the same model on the CPU. ctest label
// `gpu`; skips without a device.
//
// Tolerances: the twins sum in other orders than the CPU kernels (GEMM, attention, the norms'
// and cross-entropy's reductions), through 2 blocks: the loss within 1e-5 relative, each gradient
// within 1e-4 of its largest element + 1e-3 relative in f32. With bf16 activations a value may
// round to the neighbouring bf16 number on one side only (with or without autocast): the loss
// within 1e-3 relative, each gradient within 2e-2 of its largest element + 2e-2 relative (the bf16
// bound of the kernel tests, doubled for two layers).
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "models/gpt.h"
#include "runtime/allocator.h"
#include "runtime/kernels/cuda/cuda_kernels.h"
#include "runtime/kernels/cuda/device.h"
#include "tests/models/device_test_gpt.h"
#include "tests/runtime/kernels/test_util.h"

namespace loom::models {
namespace {

namespace cuda = runtime::kernels::cuda;
using parallel::Parameter;
using parallel::Stash;
using runtime::Device;
using runtime::DType;
using runtime::Tensor;
using runtime::kernels::testing::RandomIds;

struct Step {
  float loss = 0.0f;
  std::map<std::string, std::vector<float>> grads;
};

// One forward and backward of a fresh model (seed 7) on 3 sequences of 31 tokens, on the CPU or
// on the device.
Step RunStep(DType activations, bool autocast, bool llama, bool on_device) {
  const GptConfig config = testing::SmallDeviceGpt(llama);
  Tensor inputs = RandomIds({3, 31}, static_cast<int32_t>(config.vocab_size), 1);
  Tensor targets = RandomIds({3, 31}, static_cast<int32_t>(config.vocab_size), 2);
  std::optional<runtime::AllocatorScope> scope;
  if (on_device) {
    inputs = cuda::ToDevice(inputs).value();
    targets = cuda::ToDevice(targets).value();
    scope.emplace(&cuda::DeviceAllocator());
  }
  GptModel model(config);
  model.SetActivationDType(activations);
  model.Initialize(7);
  Stash stash;
  stash.SetActivationDType(activations);
  stash.SetAutocast(autocast);
  model.ZeroGrad();
  Step step;
  step.loss = model.ForwardLoss(stash, inputs, targets);
  model.Backward(stash, 1.0f);
  for (Parameter* p : model.Parameters()) {
    EXPECT_EQ(p->grad().device(), on_device ? Device::kCuda : Device::kCpu) << p->name();
    step.grads[p->name()] = p->grad().ToF32Vector();
  }
  const absl::Status launched = cuda::LastError("GPT step");
  EXPECT_TRUE(launched.ok()) << launched;
  return step;
}

class GptOnCuda : public ::testing::TestWithParam<testing::DevicePrecision> {
 protected:
  void SetUp() override {
    if (cuda::DeviceCount() == 0) GTEST_SKIP() << "no CUDA device: the CUDA kernels are not run";
    std::printf("CUDA device: %s\n", cuda::DeviceDescription().c_str());
    cuda::RegisterKernels();
  }
};

TEST_P(GptOnCuda, ForwardAndBackwardMatchTheCpu) {
  const auto [activations, autocast, llama] = GetParam();
  const bool bf16 = activations == DType::kBF16;
  const Step want = RunStep(activations, autocast, llama, /*on_device=*/false);
  const Step got = RunStep(activations, autocast, llama, /*on_device=*/true);
  EXPECT_NEAR(got.loss, want.loss, (bf16 ? 1e-3 : 1e-5) * std::fabs(want.loss));
  const float abs = bf16 ? 2e-2f : 1e-4f, rel = bf16 ? 2e-2f : 1e-3f;
  for (const auto& [name, w] : want.grads) {
    const std::vector<float>& g = got.grads.at(name);
    ASSERT_EQ(g.size(), w.size()) << name;
    float largest = 0.0f;
    for (float v : w) largest = std::max(largest, std::fabs(v));
    int64_t bad = 0;
    for (size_t i = 0; i < w.size(); ++i) {
      if (!(std::fabs(g[i] - w[i]) <= abs * largest + rel * std::fabs(w[i]))) {
        if (bad++ < 3) ADD_FAILURE() << name << "[" << i << "]: " << g[i] << " vs " << w[i];
      }
    }
    EXPECT_EQ(bad, 0) << name << ": " << bad << " of " << w.size() << " elements differ";
  }
}

INSTANTIATE_TEST_SUITE_P(Precisions, GptOnCuda,
                         ::testing::Values(testing::DevicePrecision{DType::kF32, false},
                                           testing::DevicePrecision{DType::kBF16, false},
                                           testing::DevicePrecision{DType::kBF16, true},
                                           testing::DevicePrecision{DType::kF32, false, true}),
                         testing::DevicePrecisionName);

}  // namespace
}  // namespace loom::models
