// The trainer's device path on the CPU: train_gpt's one-rank training with the model, gradients,
// activations and optimizer state on an emulated CUDA device (tests/runtime/emulated_device.h)
// against the same options on the host: bitwise the same losses, gradient norms and final
// weights, for fp32, bf16 (with and without autocast) and fp16 (loss scaling), ZeRO stages 0-3 on
// one rank, gradient accumulation and clipping, AdamW and SGD, flash attention, and
// mixture-of-experts models
// (routing on the host, the token rows on the device; with the auxiliary loss, capacity drops and
// the balancing bias). Layouts of several ranks on the device:
// tests/parallel/device_layouts_test.cc. What it cannot check is the CUDA kernels (gpt_cuda_test,
// label gpu).
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <iterator>
#include <memory>
#include <string>
#include <vector>

#include "models/gpt.h"
#include "models/trainer.h"
#include "tests/runtime/emulated_device.h"

namespace loom::models {
namespace {

struct Result {
  std::vector<float> losses;
  std::vector<double> grad_norms;
  std::vector<std::vector<float>> weights;  // Parameters() order
  int skipped = 0;                          // steps skipped (overflow, non-finite)
};

Result Train(TrainOptions o) {
  Result r;
  absl::StatusOr<std::unique_ptr<Trainer>> t = Trainer::Create(o);
  EXPECT_TRUE(t.ok()) << t.status();
  if (!t.ok()) return r;
  while ((*t)->step() < o.steps) {
    absl::StatusOr<StepMetrics> m = (*t)->Step();
    EXPECT_TRUE(m.ok()) << m.status();
    if (!m.ok()) return r;
    r.losses.push_back(m->loss);
    r.grad_norms.push_back(m->grad_norm);
    r.skipped += m->skipped ? 1 : 0;
  }
  EXPECT_TRUE((*t)->GatherParameters().ok());
  for (parallel::Parameter* p : (*t)->model().Parameters()) {
    if (o.device != nullptr) {
      EXPECT_EQ(p->value().device(), runtime::Device::kCuda) << p->name();
    }
    r.weights.push_back(p->value().ToF32Vector());
  }
  return r;
}

std::string FileBytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  EXPECT_TRUE(in.good()) << path;
  return std::string(std::istreambuf_iterator<char>(in), {});
}

struct Case {
  std::string name;
  std::string preset = "tiny";
  std::string precision = "fp32";
  bool autocast = false;
  int zero = 0;
  int64_t grad_accum = 1;
  std::string optimizer = "adamw";
  int64_t inject_overflow_step = 0;  // an Inf gradient at this step: a skipped step
  std::string attention = "probs";
  double moe_capacity_factor = -1;  // MoE presets: < 0 the preset's
  float moe_aux_loss_coef = -1;
};

class TrainerDevicePath : public ::testing::TestWithParam<Case> {};

TEST_P(TrainerDevicePath, TrainsBitwiseAsOnTheHost) {
  const Case& c = GetParam();
  TrainOptions o;
  o.preset = c.preset;
  o.batch = 4;
  o.attention = c.attention;
  o.moe_capacity_factor = c.moe_capacity_factor;
  o.moe_aux_loss_coef = c.moe_aux_loss_coef;
  o.precision = c.precision;
  o.autocast = c.autocast;
  o.zero = c.zero;
  o.grad_accum = c.grad_accum;
  o.optimizer = c.optimizer;
  o.inject_overflow_step = c.inject_overflow_step;
  o.steps = c.inject_overflow_step > 0 ? 4 : 3;
  o.grad_clip = 0.5f;  // clips: the tiny model's norms are above it
  o.bucket_bytes = 64 << 10;
  const Result host = Train(o);
  runtime::testing::EmulatedDevice device;
  o.device = &device.allocator();
  const Result on_device = Train(o);
  EXPECT_EQ(host.skipped, c.inject_overflow_step > 0 ? 1 : 0);
  EXPECT_EQ(on_device.skipped, host.skipped);
  EXPECT_EQ(on_device.losses, host.losses);
  EXPECT_EQ(on_device.grad_norms, host.grad_norms);
  ASSERT_EQ(on_device.weights.size(), host.weights.size());
  for (size_t i = 0; i < host.weights.size(); ++i) {
    EXPECT_EQ(on_device.weights[i], host.weights[i]) << "parameter " << i;
  }
}

INSTANTIATE_TEST_SUITE_P(
    Layouts, TrainerDevicePath,
    ::testing::Values(
        Case{.name = "fp32"}, Case{.name = "bf16", .precision = "bf16"},
        Case{.name = "bf16_autocast", .precision = "bf16", .autocast = true},
        Case{.name = "fp16", .precision = "fp16"},
        Case{.name = "fp16_overflow", .precision = "fp16", .inject_overflow_step = 2},
        Case{.name = "fp32_nonfinite_skip", .inject_overflow_step = 2},
        Case{.name = "zero1_accum2", .zero = 1, .grad_accum = 2},
        Case{.name = "zero2_bf16", .precision = "bf16", .zero = 2},
        Case{.name = "zero3", .zero = 3}, Case{.name = "sgd", .optimizer = "sgd"},
        Case{.name = "flash_attention", .attention = "flash"},
        Case{.name = "flash_attention_bf16_autocast",
             .precision = "bf16",
             .autocast = true,
             .attention = "flash"},
        Case{.name = "moe", .preset = "tiny-moe"},
        Case{.name = "moe_bf16_zero2", .preset = "tiny-moe", .precision = "bf16", .zero = 2},
        Case{.name = "moe_capacity_aux_loss",
             .preset = "tiny-moe",
             .moe_capacity_factor = 0.75,
             .moe_aux_loss_coef = 0.01f}),
    [](const ::testing::TestParamInfo<Case>& info) { return info.param.name; });

// Checkpoints, evaluation and weights files from the device: 2 steps on the device, saved,
// resumed on the device for a third, equal the uninterrupted host run bitwise (weights and loss);
// the evaluation loss and the exported file are the host's; a run starting from that file
// (--init_from) takes the host's step. For a dense model and a mixture of experts (whose balancing
// bias, a host buffer, the checkpoint and the export carry).
class TrainerDevicePathCheckpoint : public ::testing::TestWithParam<std::string> {};

TEST_P(TrainerDevicePathCheckpoint, SaveResumeEvaluateAndExportMatchTheHost) {
  TrainOptions o;
  o.preset = GetParam();
  o.steps = 3;
  o.batch = 4;
  o.precision = "bf16";
  o.zero = 1;
  const Result host = Train(o);
  auto evaluate = [](const TrainOptions& options) {
    absl::StatusOr<std::unique_ptr<Trainer>> t = Trainer::Create(options);
    EXPECT_TRUE(t.ok()) << t.status();
    absl::StatusOr<double> loss = (*t)->Evaluate((*t)->dataset(), 2);
    EXPECT_TRUE(loss.ok()) << loss.status();
    return loss.value_or(0.0);
  };
  const double host_eval = evaluate(o);
  runtime::testing::EmulatedDevice device;
  o.device = &device.allocator();
  EXPECT_EQ(evaluate(o), host_eval);
  o.save_dir = ::testing::TempDir() + "/device_path_ckpt_" + GetParam();
  std::filesystem::remove_all(o.save_dir);
  {
    absl::StatusOr<std::unique_ptr<Trainer>> t = Trainer::Create(o);
    ASSERT_TRUE(t.ok()) << t.status();
    for (int i = 0; i < 2; ++i) ASSERT_TRUE((*t)->Step().ok());
    ASSERT_TRUE((*t)->SaveCheckpoint().ok());
    ASSERT_TRUE((*t)->ExportWeights(o.save_dir + "/weights.safetensors").ok());
  }
  {  // the same two steps on the host, exported: the same bytes
    TrainOptions on_host = o;
    on_host.device = nullptr;
    on_host.save_dir.clear();
    absl::StatusOr<std::unique_ptr<Trainer>> t = Trainer::Create(on_host);
    ASSERT_TRUE(t.ok()) << t.status();
    for (int i = 0; i < 2; ++i) ASSERT_TRUE((*t)->Step().ok());
    ASSERT_TRUE((*t)->ExportWeights(o.save_dir + "/host.safetensors").ok());
    EXPECT_EQ(FileBytes(o.save_dir + "/weights.safetensors"),
              FileBytes(o.save_dir + "/host.safetensors"));
  }
  o.resume = true;
  const Result resumed = Train(o);
  ASSERT_EQ(resumed.losses.size(), 1u);
  EXPECT_EQ(resumed.losses[0], host.losses[2]);
  EXPECT_EQ(resumed.weights, host.weights);
  // Starting from exported weights (--init_from), one step on each side.
  TrainOptions from_file = o;
  from_file.resume = false;
  from_file.save_dir.clear();
  from_file.steps = 1;
  from_file.init_from = o.save_dir + "/weights.safetensors";
  const Result device_run = Train(from_file);
  from_file.device = nullptr;
  const Result host_run = Train(from_file);
  EXPECT_EQ(device_run.losses, host_run.losses);
  EXPECT_EQ(device_run.weights, host_run.weights);
  std::filesystem::remove_all(o.save_dir);
}

INSTANTIATE_TEST_SUITE_P(Presets, TrainerDevicePathCheckpoint,
                         ::testing::Values("tiny", "tiny-moe"),
                         [](const ::testing::TestParamInfo<std::string>& info) {
                           return info.param == "tiny" ? std::string("dense") : std::string("moe");
                         });

}  // namespace
}  // namespace loom::models
