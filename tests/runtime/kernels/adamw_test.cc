// AdamW: several steps against torch.optim.AdamW's update rule evaluated in double, weight decay
// decoupled from the gradient, the bf16/f16 copy-out equal to rounding the f32 master, and the
// multi-tensor form equal to the per-tensor one.
#include "runtime/kernels/adamw.h"

#include <gtest/gtest.h>

#include <cmath>
#include <vector>

#include "tests/runtime/kernels/test_util.h"

namespace loom::runtime::kernels {
namespace {

using testing::ExpectAllNear;
using testing::RandomTensor;

TEST(AdamWTest, StepsMatchReference) {
  const AdamWConfig cfg{
      .lr = 1e-2f, .beta1 = 0.9f, .beta2 = 0.95f, .eps = 1e-8f, .weight_decay = 0.1f};
  for (int64_t n : {1, 7, 4099}) {
    Tensor p = RandomTensor({n}, 1, 1.0f, MemoryTag::kParam);
    Tensor m = Tensor::Zeros({n}, DType::kF32, MemoryTag::kOptimizer);
    Tensor v = Tensor::Zeros({n}, DType::kF32, MemoryTag::kOptimizer);
    const std::vector<float> p0 = p.ToF32Vector();
    std::vector<double> rp(p0.begin(), p0.end());
    std::vector<double> rm(n, 0.0), rv(n, 0.0);
    for (int64_t step = 1; step <= 5; ++step) {
      Tensor g = RandomTensor({n}, 10 + step, 1.0f, MemoryTag::kGrad);
      AdamWUpdate(p, g, m, v, cfg, step);
      const std::vector<float> gv = g.ToF32Vector();
      for (int64_t i = 0; i < n; ++i) {
        rp[i] *= 1.0 - double{cfg.lr} * cfg.weight_decay;
        rm[i] = cfg.beta1 * rm[i] + (1.0 - cfg.beta1) * gv[i];
        rv[i] = cfg.beta2 * rv[i] + (1.0 - cfg.beta2) * double{gv[i]} * gv[i];
        const double mhat = rm[i] / (1.0 - std::pow(double{cfg.beta1}, step));
        const double vhat = rv[i] / (1.0 - std::pow(double{cfg.beta2}, step));
        rp[i] -= cfg.lr * mhat / (std::sqrt(vhat) + cfg.eps);
      }
      ExpectAllNear(p, rp, 1e-6, 1e-5, "params after step " + std::to_string(step));
      ExpectAllNear(m, rm, 1e-6, 1e-5, "m after step " + std::to_string(step));
      ExpectAllNear(v, rv, 1e-7, 1e-5, "v after step " + std::to_string(step));
    }
  }
}

TEST(AdamWTest, ZeroGradientOnlyDecays) {
  Tensor p = Tensor::FromVector<float>({2}, {2.0f, -4.0f}, MemoryTag::kParam);
  Tensor g = Tensor::Zeros({2}, DType::kF32, MemoryTag::kGrad);
  Tensor m = Tensor::Zeros({2}, DType::kF32, MemoryTag::kOptimizer);
  Tensor v = Tensor::Zeros({2}, DType::kF32, MemoryTag::kOptimizer);
  AdamWUpdate(p, g, m, v, {.lr = 0.5f, .weight_decay = 0.1f}, 1);
  EXPECT_FLOAT_EQ(p.data<float>()[0], 2.0f * 0.95f);
  EXPECT_FLOAT_EQ(p.data<float>()[1], -4.0f * 0.95f);
}

TEST(AdamWTest, CopyOutIsRoundedMaster) {
  for (DType dt : {DType::kBF16, DType::kF16}) {
    Tensor p = RandomTensor({4099}, 2, 1.0f, MemoryTag::kParam);
    Tensor g = RandomTensor({4099}, 3, 1.0f, MemoryTag::kGrad);
    Tensor m = Tensor::Zeros({4099}, DType::kF32, MemoryTag::kOptimizer);
    Tensor v = Tensor::Zeros({4099}, DType::kF32, MemoryTag::kOptimizer);
    Tensor copy = Tensor::Empty({4099}, dt, MemoryTag::kParam);
    AdamWUpdate(p, g, m, v, {}, 1, &copy);
    const uint16_t* c = static_cast<const uint16_t*>(copy.raw_data());
    for (int64_t i = 0; i < 4099; ++i) {
      const float f = p.data<float>()[i];
      ASSERT_EQ(c[i], dt == DType::kBF16 ? F32ToBF16(f) : F32ToF16(f)) << i;
    }
  }
}

// The multi-tensor form on the host: each tensor exactly as its own AdamWUpdate (weight decay only
// where `decay`: the 4099-element tensor has none), an empty one allowed. (On the emulated
// device: trainer_device_path_test trains through it; on a GPU: cuda_kernels_test.)
TEST(AdamWTest, ManyIsEachTensorsOwnUpdate) {
  const AdamWConfig cfg{
      .lr = 1e-2f, .beta1 = 0.9f, .beta2 = 0.95f, .eps = 1e-8f, .weight_decay = 0.1f};
  std::vector<AdamWTensors> many, one;
  for (int64_t n : {5, 0, 4099, 1}) {
    const uint64_t seed = 20 + static_cast<uint64_t>(n);
    const bool decay = n != 4099;
    for (std::vector<AdamWTensors>* list : {&many, &one}) {
      Tensor v = Tensor::Zeros({n}, DType::kF32, MemoryTag::kOptimizer);
      v.Fill(0.01f);
      list->push_back({RandomTensor({n}, seed, 1.0f, MemoryTag::kParam),
                       RandomTensor({n}, seed + 1, 1.0f, MemoryTag::kGrad),
                       RandomTensor({n}, seed + 2, 0.1f, MemoryTag::kOptimizer), v, decay});
    }
  }
  AdamWUpdateMany(many, cfg, /*step=*/2);
  for (size_t i = 0; i < one.size(); ++i) {
    AdamWConfig c = cfg;
    if (!one[i].decay) c.weight_decay = 0.0f;
    AdamWUpdate(one[i].master, one[i].grad, one[i].m, one[i].v, c, 2);
    EXPECT_EQ(many[i].master.ToF32Vector(), one[i].master.ToF32Vector()) << i;
    EXPECT_EQ(many[i].m.ToF32Vector(), one[i].m.ToF32Vector()) << i;
    EXPECT_EQ(many[i].v.ToF32Vector(), one[i].v.ToF32Vector()) << i;
  }
}

}  // namespace
}  // namespace loom::runtime::kernels
