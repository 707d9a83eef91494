// Stash under mixed precision: 16-bit storage, widening on Get, GEMM operands as stored under bf16
// (GetForGemm), and a Linear layer under bf16: forward in f32 (in bf16 under autocast), backward
// GEMMs on bf16-rounded operands with f32 accumulation, each checked against a double-precision
// product.
#include "parallel/stash.h"

#include <gtest/gtest.h>

#include <cmath>
#include <vector>

#include "parallel/layers/linear.h"
#include "runtime/dtype.h"
#include "tests/runtime/kernels/test_util.h"

namespace loom::parallel {
namespace {

using runtime::DType;
using runtime::MemoryTag;
using runtime::Tensor;

Tensor Random(const runtime::Shape& shape, uint32_t seed) {
  return runtime::kernels::testing::RandomTensor(shape, seed);
}

float RoundBF16(float x) { return runtime::BF16ToF32(runtime::F32ToBF16(x)); }

TEST(StashTest, GemmOperandsComeBackAsStoredOnlyInTheGemmDType) {
  const int owner = 0;
  Tensor x = Random({3, 5}, 1);
  for (DType dt : {DType::kF32, DType::kBF16, DType::kF16}) {
    Stash stash;
    stash.SetActivationDType(dt);
    stash.Put(&owner, "x", x);
    EXPECT_EQ(stash.GemmDType(), dt == DType::kBF16 ? DType::kBF16 : DType::kF32);
    const Tensor wide = stash.Get(&owner, "x");
    const Tensor gemm = stash.GetForGemm(&owner, "x");
    EXPECT_EQ(wide.dtype(), DType::kF32);
    EXPECT_EQ(gemm.dtype(), stash.GemmDType()) << DTypeName(dt);
    // Same values either way: the bf16 copy widened is what Get returns.
    EXPECT_EQ(gemm.ToF32Vector(), wide.ToF32Vector()) << DTypeName(dt);
  }
}

TEST(StashTest, AutocastAppliesToForwardGemmsOfBf16TrainingOnly) {
  const int owner = 0;
  const Tensor x = Random({3, 5}, 1);
  for (DType dt : {DType::kF32, DType::kBF16, DType::kF16}) {
    Stash stash;
    stash.SetActivationDType(dt);
    stash.Put(&owner, "x", x);
    EXPECT_EQ(stash.ForwardGemmDType(), DType::kF32) << DTypeName(dt);
    EXPECT_EQ(stash.ForwardGemmInput(&owner, "x", x).raw_data(), x.raw_data()) << DTypeName(dt);
    stash.SetAutocast(true);
    EXPECT_EQ(stash.ForwardGemmDType(), stash.GemmDType()) << DTypeName(dt);
    EXPECT_EQ(stash.ForwardGemmInput(&owner, "x", x).dtype(), stash.GemmDType()) << DTypeName(dt);
  }
}

// A Linear layer [out, in] with bias-free weights that are bf16 values (as working weights are
// under bf16 training) and its forward output on `x` under `stash`, checked against the product
// in double of x (rounded to bf16 when `rounded`) and the weights.
Tensor ForwardChecked(Linear& fc, Stash& stash, const Tensor& x, bool rounded) {
  Parameter& w = *fc.Parameters()[0];
  const int64_t m = x.dim(0), in = w.value().dim(1), out = w.value().dim(0);
  const Tensor y = fc.Forward(stash, x);
  const std::vector<float> xv = x.ToF32Vector(), wv = w.value().ToF32Vector();
  const std::vector<float> yv = y.ToF32Vector();
  for (int64_t i = 0; i < m; ++i) {
    for (int64_t j = 0; j < out; ++j) {
      double ref = 0.0, mag = 0.0;
      for (int64_t l = 0; l < in; ++l) {
        const float xl = rounded ? RoundBF16(xv[i * in + l]) : xv[i * in + l];
        const double t = double{xl} * wv[j * in + l];
        ref += t;
        mag += std::fabs(t);
      }
      EXPECT_NEAR(yv[i * out + j], ref, 1e-6 * mag) << i << "," << j;
    }
  }
  return y;
}

// A bias-free Linear layer [out, in]; its weights are random bf16 values, its gradient zero.
struct Bf16ValuedLinear {
  Bf16ValuedLinear(int64_t in, int64_t out)
      : fc("fc", in, out, {.bias = false, .layout = WeightLayout::kOutIn}) {
    Parameter& w = *fc.Parameters()[0];
    w.value() = Random({out, in}, 2);
    runtime::RoundToDType(w.value().data<float>(), w.value().numel(), DType::kBF16);
    w.grad() = Tensor::Zeros({out, in}, DType::kF32, MemoryTag::kGrad);
  }
  Linear fc;
};

TEST(StashTest, LinearUnderBf16AutocastRoundsTheForwardInputOnce) {
  Bf16ValuedLinear layer(33, 17);
  Stash stash;
  stash.SetActivationDType(DType::kBF16);
  stash.SetAutocast(true);
  ForwardChecked(layer.fc, stash, Random({6, 33}, 3), /*rounded=*/true);
}

TEST(StashTest, LinearUnderBf16ForwardInF32BackwardOnBf16Operands) {
  const int64_t m = 6, in = 33, out = 17;
  Bf16ValuedLinear layer(in, out);
  Linear& fc = layer.fc;
  Parameter& w = *fc.Parameters()[0];
  const Tensor x = Random({m, in}, 3);
  Stash stash;
  stash.SetActivationDType(DType::kBF16);
  ForwardChecked(fc, stash, x, /*rounded=*/false);
  const std::vector<float> xv = x.ToF32Vector();
  // The weight gradient multiplies the stashed bf16 x by the rounded dy.
  const Tensor dy = Random({m, out}, 4);
  fc.BackwardInput(stash, dy);
  fc.BackwardWeight(stash);
  const std::vector<float> dyv = dy.ToF32Vector(), gv = w.grad().ToF32Vector();
  for (int64_t j = 0; j < out; ++j) {
    for (int64_t l = 0; l < in; ++l) {
      double ref = 0.0, mag = 0.0;
      for (int64_t i = 0; i < m; ++i) {
        const double t = double{RoundBF16(dyv[i * out + j])} * RoundBF16(xv[i * in + l]);
        ref += t;
        mag += std::fabs(t);
      }
      EXPECT_NEAR(gv[j * in + l], ref, 1e-6 * mag) << j << "," << l;
    }
  }
}

}  // namespace
}  // namespace loom::parallel
