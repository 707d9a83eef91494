// GPT's device path on the CPU: the GPT-2 variant, and the RMSNorm + SwiGLU one, built and
// trained under an AllocatorScope of an emulated CUDA device (tests/runtime/emulated_device.h:
// memory the host code must not touch, twins that run the CPU kernels on host copies). Two steps
// of forward, backward and AdamW must give bitwise the host run's losses, gradients and
// parameters, in f32, bf16 and bf16 with autocast; so everything the model, the stash, the loss
// and the optimizer do to device tensors goes through the dispatching entry points and Tensor's
// source-aware operations (a host access aborts), and the twins see the arguments the host kernels
// see. The CUDA kernels themselves are gpt_cuda_test's (label gpu).
#include <gtest/gtest.h>

#include <optional>
#include <string>
#include <vector>

#include "models/gpt.h"
#include "optim/optimizer.h"
#include "runtime/allocator.h"
#include "tests/models/device_test_gpt.h"
#include "tests/runtime/emulated_device.h"
#include "tests/runtime/kernels/test_util.h"

namespace loom::models {
namespace {

using parallel::Parameter;
using parallel::Stash;
using runtime::Device;
using runtime::DType;
using runtime::Tensor;
using runtime::kernels::testing::RandomIds;

struct Training {
  std::vector<float> losses;
  std::vector<std::vector<float>> grads, params;  // after the last step, in Parameters() order
};

Training Train(DType activations, bool autocast, bool llama, runtime::Allocator* device) {
  const GptConfig config = testing::SmallDeviceGpt(llama);
  std::optional<runtime::AllocatorScope> scope;
  std::vector<Tensor> inputs, targets;
  for (uint32_t step = 0; step < 2; ++step) {
    inputs.push_back(RandomIds({2, 15}, static_cast<int32_t>(config.vocab_size), 10 + step));
    targets.push_back(RandomIds({2, 15}, static_cast<int32_t>(config.vocab_size), 20 + step));
    if (device != nullptr) {
      inputs.back() = inputs.back().Clone(device);
      targets.back() = targets.back().Clone(device);
    }
  }
  if (device != nullptr) scope.emplace(device);
  GptModel model(config);
  model.SetActivationDType(activations);
  model.Initialize(7);
  optim::AdamW adamw({.beta1 = 0.9f, .beta2 = 0.95f, .eps = 1e-8f, .weight_decay = 0.1f});
  Training run;
  for (size_t step = 0; step < inputs.size(); ++step) {
    Stash stash;
    stash.SetActivationDType(activations);
    stash.SetAutocast(autocast);
    model.ZeroGrad();
    run.losses.push_back(model.ForwardLoss(stash, inputs[step], targets[step]));
    model.Backward(stash, 1.0f);
    std::vector<optim::ParamSlot> slots;
    for (Parameter* p : model.Parameters()) {
      slots.push_back({p->name(), p->value(), p->grad(), p->weight_decay()});
    }
    adamw.Step(slots, 1e-2f);
  }
  for (Parameter* p : model.Parameters()) {
    EXPECT_EQ(p->value().device(), device != nullptr ? Device::kCuda : Device::kCpu) << p->name();
    run.grads.push_back(p->grad().ToF32Vector());
    run.params.push_back(p->value().ToF32Vector());
  }
  return run;
}

class GptDevicePath : public ::testing::TestWithParam<testing::DevicePrecision> {};

TEST_P(GptDevicePath, TrainsBitwiseAsOnTheHost) {
  const auto [activations, autocast, llama] = GetParam();
  const Training host = Train(activations, autocast, llama, nullptr);
  runtime::testing::EmulatedDevice device;
  runtime::testing::emulated::copies = 0;
  const Training on_device = Train(activations, autocast, llama, &device.allocator());
  EXPECT_GT(runtime::testing::emulated::copies, 0);  // the twins ran on device tensors
  EXPECT_EQ(on_device.losses, host.losses);
  ASSERT_EQ(on_device.params.size(), host.params.size());
  for (size_t i = 0; i < host.params.size(); ++i) {
    EXPECT_EQ(on_device.grads[i], host.grads[i]) << "gradient of parameter " << i;
    EXPECT_EQ(on_device.params[i], host.params[i]) << "parameter " << i;
  }
}

INSTANTIATE_TEST_SUITE_P(Precisions, GptDevicePath,
                         ::testing::Values(testing::DevicePrecision{DType::kF32, false},
                                           testing::DevicePrecision{DType::kBF16, false},
                                           testing::DevicePrecision{DType::kBF16, true},
                                           testing::DevicePrecision{DType::kF32, false, true},
                                           testing::DevicePrecision{DType::kBF16, false, true}),
                         testing::DevicePrecisionName);

}  // namespace
}  // namespace loom::models
