// GELU (tanh form) and SwiGLU: forward against formulas evaluated in double, backward against
// central finite differences.
#include "runtime/kernels/activation.h"

#include <gtest/gtest.h>

#include <cmath>

#include "tests/runtime/kernels/test_util.h"

namespace loom::runtime::kernels {
namespace {

using testing::Dot;
using testing::ExpectAllNear;
using testing::ExpectGradientMatches;
using testing::RandomTensor;
using testing::ToDType;

std::vector<Shape> Shapes() { return {{1}, {7}, {33, 3}, {4099}}; }

TEST(GeluTest, ForwardMatchesFormula) {
  for (const Shape& shape : Shapes()) {
    Tensor x = RandomTensor(shape, 1, 3.0f);
    Tensor out = Tensor::Empty(shape, DType::kF32, MemoryTag::kActivation);
    GeluForward(x, out);
    std::vector<double> expected;
    for (float v : x.ToF32Vector()) {
      const double d = v;
      expected.push_back(0.5 * d *
                         (1 + std::tanh(std::sqrt(2 / M_PI) * (d + 0.044715 * d * d * d))));
    }
    ExpectAllNear(out, expected, 1e-6, 1e-5, "GELU " + ShapeToString(shape));
  }
}

// The fused bias add + GELU: x becomes x + bias exactly (one f32 addition per element), out is
// GELU of that within GELU's own tolerance (above), on shapes whose rows are split across threads.
TEST(GeluTest, BiasGeluForwardAddsTheBiasThenAppliesGelu) {
  for (const Shape& shape : {Shape{1, 1}, Shape{7, 33}, Shape{3, 5, 1536}}) {
    Tensor x = RandomTensor(shape, 2, 3.0f);
    const Tensor bias = RandomTensor({shape.back()}, 3);
    const std::vector<float> xv = x.ToF32Vector(), bv = bias.ToF32Vector();
    Tensor out = Tensor::Empty(shape, DType::kF32, MemoryTag::kActivation);
    BiasGeluForward(x, bias, out);
    std::vector<double> sum, expected;
    for (size_t i = 0; i < xv.size(); ++i) {
      const float v = xv[i] + bv[i % bv.size()];
      sum.push_back(v);
      const double d = v;
      expected.push_back(0.5 * d *
                         (1 + std::tanh(std::sqrt(2 / M_PI) * (d + 0.044715 * d * d * d))));
    }
    ExpectAllNear(x, sum, 0.0, 0.0, "bias add " + ShapeToString(shape));
    ExpectAllNear(out, expected, 1e-6, 1e-5, "bias + GELU " + ShapeToString(shape));
  }
}

TEST(GeluTest, BackwardMatchesFiniteDifferences) {
  for (const Shape& shape : Shapes()) {
    Tensor x = RandomTensor(shape, 2, 2.0f);
    Tensor dout = RandomTensor(shape, 3);
    Tensor out = Tensor::Empty(shape, DType::kF32, MemoryTag::kActivation);
    Tensor dx = Tensor::Zeros(shape, DType::kF32, MemoryTag::kGrad);
    GeluBackward(dout, x, dx);
    ExpectGradientMatches(
        [&] {
          GeluForward(x, out);
          return Dot(out, dout);
        },
        x, dx, "GELU dx " + ShapeToString(shape));
  }
}

// x in bf16 (a bf16 run's stashed copy): the same bits as the f32 kernel on its exact widening,
// accumulated into dx; x in f16 is refused.
TEST(GeluTest, BackwardReadsBf16Inputs) {
  for (const Shape& shape : Shapes()) {
    const Tensor x16 = ToDType(RandomTensor(shape, 2, 2.0f), DType::kBF16);
    const Tensor x32 = ToDType(x16, DType::kF32);
    const Tensor dout = RandomTensor(shape, 3), dx0 = RandomTensor(shape, 4);
    Tensor want = dx0.Clone(), got = dx0.Clone();
    GeluBackward(dout, x32, want);
    GeluBackward(dout, x16, got);
    EXPECT_EQ(got.ToF32Vector(), want.ToF32Vector()) << ShapeToString(shape);
  }
  const Tensor x = ToDType(RandomTensor({4}, 5), DType::kF16), d = RandomTensor({4}, 6);
  Tensor dx = Tensor::Zeros({4}, DType::kF32, MemoryTag::kGrad);
  EXPECT_DEATH(GeluBackward(d, x, dx), "x must be f32 or bf16");
}

// Without accumulate dx's previous contents (NaN here) are ignored: the bits of accumulating
// into zeros, for f32 and bf16 x.
TEST(GeluTest, BackwardWithoutAccumulateOverwrites) {
  for (const Shape& shape : Shapes()) {
    for (DType dtype : {DType::kF32, DType::kBF16}) {
      const Tensor x = ToDType(RandomTensor(shape, 2, 2.0f), dtype);
      const Tensor dout = RandomTensor(shape, 3);
      Tensor want = Tensor::Zeros(shape, DType::kF32, MemoryTag::kGrad);
      GeluBackward(dout, x, want);
      Tensor got = Tensor::Empty(shape, DType::kF32, MemoryTag::kGrad);
      got.Fill(std::nanf(""));
      GeluBackward(dout, x, got, /*accumulate=*/false);
      EXPECT_EQ(got.ToF32Vector(), want.ToF32Vector()) << ShapeToString(shape) << " " << dtype;
    }
  }
}

TEST(SwiGLUTest, ForwardMatchesFormula) {
  for (const Shape& shape : Shapes()) {
    Tensor gate = RandomTensor(shape, 4, 3.0f);
    Tensor up = RandomTensor(shape, 5);
    Tensor out = Tensor::Empty(shape, DType::kF32, MemoryTag::kActivation);
    SwiGLUForward(gate, up, out);
    const std::vector<float> g = gate.ToF32Vector(), u = up.ToF32Vector();
    std::vector<double> expected;
    for (size_t i = 0; i < g.size(); ++i)
      expected.push_back(g[i] / (1 + std::exp(-double{g[i]})) * u[i]);
    ExpectAllNear(out, expected, 1e-6, 1e-5, "SwiGLU " + ShapeToString(shape));
  }
}

TEST(SwiGLUTest, BackwardMatchesFiniteDifferences) {
  for (const Shape& shape : Shapes()) {
    Tensor gate = RandomTensor(shape, 6, 2.0f);
    Tensor up = RandomTensor(shape, 7);
    Tensor dout = RandomTensor(shape, 8);
    Tensor out = Tensor::Empty(shape, DType::kF32, MemoryTag::kActivation);
    Tensor dgate = Tensor::Zeros(shape, DType::kF32, MemoryTag::kGrad);
    Tensor dup = Tensor::Zeros(shape, DType::kF32, MemoryTag::kGrad);
    SwiGLUBackward(dout, gate, up, dgate, dup);
    auto loss = [&] {
      SwiGLUForward(gate, up, out);
      return Dot(out, dout);
    };
    ExpectGradientMatches(loss, gate, dgate, "SwiGLU dgate " + ShapeToString(shape));
    ExpectGradientMatches(loss, up, dup, "SwiGLU dup " + ShapeToString(shape));
  }
}

}  // namespace
}  // namespace loom::runtime::kernels
