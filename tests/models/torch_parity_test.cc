// Parity with an independent implementation: the same small GPT-2 built in PyTorch
// (scripts/torch_reference/gpt_parity.py) from loom's weights and tokens must give the same
// logits, loss and every parameter gradient within fp32 tolerances.
//
// Two modes, both in this binary:
//  - Fixture (always): tests/fixtures/gpt_parity_reference.safetensors holds weights, tokens and
//    PyTorch's results; loom loads the weights and tokens from it and compares.
//  - Live (when `python3 -c "import torch"` works; LOOM_TORCH_PYTHON picks the interpreter): loom
//    initialises the model itself, writes weights and tokens, runs the script and compares.
//    LOOM_PARITY_WRITE_FIXTURE=1 also copies the result over the fixture (the regeneration
//    command: `LOOM_PARITY_WRITE_FIXTURE=1 build/tests/torch_parity_test`).
//
// Tolerances: logits |Δ| <= 2e-5 + 1e-4·|ref|; loss |Δ| <= 1e-5; gradients
// |Δ| <= 1e-6 + 1e-3·max|ref grad of that parameter|.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <map>

#include "models/gpt.h"
#include "models/gpt_weights.h"
#include "runtime/io/file.h"
#include "runtime/io/safetensors.h"
#include "tests/runtime/kernels/test_util.h"

namespace loom::models {
namespace {

using runtime::Tensor;
using runtime::io::NamedTensor;
using runtime::io::SafetensorsFile;

constexpr char kFixture[] = LOOM_SOURCE_DIR "/tests/fixtures/gpt_parity_reference.safetensors";
constexpr char kScript[] = LOOM_SOURCE_DIR "/scripts/torch_reference/gpt_parity.py";

GptConfig ParityConfig() {
  GptConfig c;
  c.name = "parity";
  c.vocab_size = 64;
  c.context_length = 16;
  c.num_layers = 2;
  c.num_heads = 2;
  c.dim = 32;
  c.init_std = 0.1f;
  return c;
}

bool CanImportTorch(const std::string& python) {
  return std::system((python + " -c 'import torch, numpy' >/dev/null 2>&1").c_str()) == 0;
}

// LOOM_TORCH_PYTHON if set, else the first of python3 and /usr/bin/python3 (Debian's
// python3-torch) that imports torch; empty if none does.
std::string TorchPython() {
  if (const char* env = std::getenv("LOOM_TORCH_PYTHON")) return CanImportTorch(env) ? env : "";
  for (const char* candidate : {"python3", "/usr/bin/python3"}) {
    if (CanImportTorch(candidate)) return candidate;
  }
  return "";
}

// Strips `prefix` from the names of the tensors that have it.
SafetensorsFile WithPrefix(const SafetensorsFile& file, const std::string& prefix) {
  SafetensorsFile out;
  for (const NamedTensor& nt : file.tensors) {
    if (nt.name.rfind(prefix, 0) == 0)
      out.tensors.push_back({nt.name.substr(prefix.size()), nt.tensor});
  }
  return out;
}

void ExpectClose(const Tensor& actual, const Tensor& ref, double atol, double rtol,
                 const std::string& what) {
  ASSERT_EQ(actual.shape(), ref.shape()) << what;
  const std::vector<float> a = actual.ToF32Vector(), r = ref.ToF32Vector();
  double max_diff = 0;
  int64_t bad = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    const double d = std::fabs(double{a[i]} - r[i]);
    max_diff = std::max(max_diff, d);
    if (d > atol + rtol * std::fabs(r[i])) ++bad;
  }
  EXPECT_EQ(bad, 0) << what << ": " << bad << " of " << a.size()
                    << " elements out of tolerance, max |diff| " << max_diff;
}

double MaxAbs(const Tensor& t) {
  double m = 0;
  for (float v : t.ToF32Vector()) m = std::max(m, std::fabs(double{v}));
  return m;
}

// Runs loom on the weights already in `model` and `inputs`/`targets`; compares with `ref`.
void CompareWithReference(GptModel& model, const SafetensorsFile& ref) {
  const Tensor* inputs = ref.Find("inputs");
  const Tensor* targets = ref.Find("targets");
  ASSERT_NE(inputs, nullptr);
  ASSERT_NE(targets, nullptr);
  parallel::Stash stash;
  model.ZeroGrad();
  const Tensor logits = model.Logits(stash, *inputs);
  parallel::CrossEntropyLoss loss_layer;
  const float loss = loss_layer.Forward(stash, logits, *targets);
  stash.Clear();
  ExpectClose(logits, *ref.Find("ref.logits"), 2e-5, 1e-4, "logits");
  EXPECT_NEAR(loss, ref.Find("ref.loss")->ToF32Vector()[0], 1e-5) << "loss";
  // Gradients: the model's own forward + backward.
  model.ForwardLoss(stash, *inputs, *targets);
  model.Backward(stash, 1.0f);
  int compared = 0;
  for (parallel::Parameter* p : model.Parameters()) {
    const Tensor* g = ref.Find("ref.grad." + p->name());
    ASSERT_NE(g, nullptr) << p->name();
    ExpectClose(p->grad(), *g, 1e-6 + 1e-3 * MaxAbs(*g), 0.0, "grad " + p->name());
    ++compared;
  }
  EXPECT_EQ(compared, 2 + 2 * 12 + 2);  // wte, wpe; 12 per block; ln_f weight and bias
}

TEST(TorchParityTest, MatchesCommittedFixture) {
  absl::StatusOr<SafetensorsFile> ref = runtime::io::ReadSafetensors(kFixture);
  ASSERT_TRUE(ref.ok()) << ref.status();
  GptModel model(ParityConfig());
  model.Initialize(1);
  ASSERT_TRUE(LoadGptWeights(model, WithPrefix(*ref, "weights."), kFixture).ok());
  CompareWithReference(model, *ref);
}

TEST(TorchParityTest, MatchesLivePyTorch) {
  const std::string python = TorchPython();
  if (python.empty()) GTEST_SKIP() << "no python3 here imports torch and numpy";
  GptModel model(ParityConfig());
  model.Initialize(20241128);
  std::vector<NamedTensor> input;
  absl::StatusOr<std::vector<NamedTensor>> weights = GptParameterTensors(model);
  ASSERT_TRUE(weights.ok()) << weights.status();
  for (const NamedTensor& nt : *weights) input.push_back({"weights." + nt.name, nt.tensor});
  input.push_back({"inputs", runtime::kernels::testing::RandomIds({2, 16}, 64, 11)});
  input.push_back({"targets", runtime::kernels::testing::RandomIds({2, 16}, 64, 12)});
  const std::string dir = ::testing::TempDir() + "/loom_parity";
  std::filesystem::create_directories(dir);
  const std::string in_path = dir + "/input.safetensors", out_path = dir + "/reference.safetensors";
  ASSERT_TRUE(runtime::io::WriteSafetensors(in_path, input, {{"n_head", "2"}}).ok());
  const std::string cmd = python + " " + kScript + " --in " + in_path + " --out " + out_path;
  ASSERT_EQ(std::system(cmd.c_str()), 0) << cmd;
  absl::StatusOr<SafetensorsFile> ref = runtime::io::ReadSafetensors(out_path);
  ASSERT_TRUE(ref.ok()) << ref.status();
  CompareWithReference(model, *ref);
  if (std::getenv("LOOM_PARITY_WRITE_FIXTURE") != nullptr && !HasFailure()) {
    std::filesystem::copy_file(out_path, kFixture,
                               std::filesystem::copy_options::overwrite_existing);
    std::printf("wrote %s\n", kFixture);
  }
}

}  // namespace
}  // namespace loom::models
