// LayerNorm and RMSNorm: forward against a double-precision reference, backward (dx, dw, db)
// against central finite differences, on odd and even shapes.
#include "runtime/kernels/norm.h"

#include <gtest/gtest.h>

#include <cmath>

#include "tests/runtime/kernels/test_util.h"

namespace loom::runtime::kernels {
namespace {

using testing::Dot;
using testing::ExpectAllNear;
using testing::ExpectGradientMatches;
using testing::RandomTensor;

constexpr float kEps = 1e-5f;

std::vector<Shape> NormShapes() { return {{1, 1}, {1, 7}, {7, 33}, {2, 3, 64}, {3, 4099}}; }

std::vector<double> ReferenceLayerNorm(const Tensor& x, const Tensor& w, const Tensor& b) {
  const int64_t c = x.dim(-1), rows = x.numel() / c;
  const std::vector<float> xv = x.ToF32Vector(), wv = w.ToF32Vector(), bv = b.ToF32Vector();
  std::vector<double> out(xv.size());
  for (int64_t r = 0; r < rows; ++r) {
    double mean = 0, var = 0;
    for (int64_t j = 0; j < c; ++j) mean += xv[r * c + j];
    mean /= c;
    for (int64_t j = 0; j < c; ++j) var += (xv[r * c + j] - mean) * (xv[r * c + j] - mean);
    var /= c;
    for (int64_t j = 0; j < c; ++j) {
      out[r * c + j] = (xv[r * c + j] - mean) / std::sqrt(var + kEps) * wv[j] + bv[j];
    }
  }
  return out;
}

std::vector<double> ReferenceRMSNorm(const Tensor& x, const Tensor& w) {
  const int64_t c = x.dim(-1), rows = x.numel() / c;
  const std::vector<float> xv = x.ToF32Vector(), wv = w.ToF32Vector();
  std::vector<double> out(xv.size());
  for (int64_t r = 0; r < rows; ++r) {
    double ss = 0;
    for (int64_t j = 0; j < c; ++j) ss += double{xv[r * c + j]} * xv[r * c + j];
    const double s = 1.0 / std::sqrt(ss / c + kEps);
    for (int64_t j = 0; j < c; ++j) out[r * c + j] = xv[r * c + j] * s * wv[j];
  }
  return out;
}

testing::GradTolerance WideRowTolerance(int64_t c) {
  testing::GradTolerance tol;
  if (c > 1000) tol.atol = 3e-3;
  return tol;
}

Shape Rows(const Shape& shape) {
  int64_t n = 1;
  for (size_t i = 0; i + 1 < shape.size(); ++i) n *= shape[i];
  return {n};
}

TEST(LayerNormTest, ForwardMatchesReference) {
  for (const Shape& shape : NormShapes()) {
    const int64_t c = shape.back();
    Tensor x = RandomTensor(shape, 1, 2.0f);
    Tensor w = RandomTensor({c}, 2);
    Tensor b = RandomTensor({c}, 3);
    Tensor out = Tensor::Empty(shape, DType::kF32, MemoryTag::kActivation);
    Tensor mean = Tensor::Empty(Rows(shape), DType::kF32, MemoryTag::kActivation);
    Tensor rstd = Tensor::Empty(Rows(shape), DType::kF32, MemoryTag::kActivation);
    LayerNormForward(x, w, b, kEps, out, mean, rstd);
    ExpectAllNear(out, ReferenceLayerNorm(x, w, b), 1e-4, 1e-4,
                  "LayerNorm " + ShapeToString(shape));
  }
}

TEST(LayerNormTest, BackwardMatchesFiniteDifferences) {
  for (const Shape& shape : NormShapes()) {
    if (shape.back() == 1) continue;  // output is constant in x: nothing to differentiate
    const int64_t c = shape.back();
    Tensor x = RandomTensor(shape, 4);
    Tensor w = RandomTensor({c}, 5);
    Tensor b = RandomTensor({c}, 6);
    Tensor dout = RandomTensor(shape, 7);
    Tensor out = Tensor::Empty(shape, DType::kF32, MemoryTag::kActivation);
    Tensor mean = Tensor::Empty(Rows(shape), DType::kF32, MemoryTag::kActivation);
    Tensor rstd = Tensor::Empty(Rows(shape), DType::kF32, MemoryTag::kActivation);
    auto loss = [&] {
      LayerNormForward(x, w, b, kEps, out, mean, rstd);
      return Dot(out, dout);
    };
    loss();
    Tensor dx = Tensor::Zeros(shape, DType::kF32, MemoryTag::kGrad);
    Tensor dw = Tensor::Zeros({c}, DType::kF32, MemoryTag::kGrad);
    Tensor db = Tensor::Zeros({c}, DType::kF32, MemoryTag::kGrad);
    LayerNormBackward(dout, x, w, mean, rstd, dx, dw, db);
    const std::string s = ShapeToString(shape);
    // With thousands of outputs per row the f32 rounding of the recomputed row statistics puts
    // about 1e-3 of noise into the finite difference; smaller rows keep the default tolerance.
    ExpectGradientMatches(loss, x, dx, "LayerNorm dx " + s, WideRowTolerance(c));
    ExpectGradientMatches(loss, w, dw, "LayerNorm dw " + s);
    ExpectGradientMatches(loss, b, db, "LayerNorm db " + s);
  }
}

TEST(RMSNormTest, ForwardMatchesReference) {
  for (const Shape& shape : NormShapes()) {
    Tensor x = RandomTensor(shape, 8, 2.0f);
    Tensor w = RandomTensor({shape.back()}, 9);
    Tensor out = Tensor::Empty(shape, DType::kF32, MemoryTag::kActivation);
    Tensor rstd = Tensor::Empty(Rows(shape), DType::kF32, MemoryTag::kActivation);
    RMSNormForward(x, w, kEps, out, rstd);
    ExpectAllNear(out, ReferenceRMSNorm(x, w), 1e-4, 1e-4, "RMSNorm " + ShapeToString(shape));
  }
}

TEST(RMSNormTest, BackwardMatchesFiniteDifferences) {
  for (const Shape& shape : NormShapes()) {
    if (shape.back() == 1) continue;  // out ≈ sign(x)·w: flat except in a 1e-3-wide kink at 0
    const int64_t c = shape.back();
    Tensor x = RandomTensor(shape, 10);
    Tensor w = RandomTensor({c}, 11);
    Tensor dout = RandomTensor(shape, 12);
    Tensor out = Tensor::Empty(shape, DType::kF32, MemoryTag::kActivation);
    Tensor rstd = Tensor::Empty(Rows(shape), DType::kF32, MemoryTag::kActivation);
    auto loss = [&] {
      RMSNormForward(x, w, kEps, out, rstd);
      return Dot(out, dout);
    };
    loss();
    Tensor dx = Tensor::Zeros(shape, DType::kF32, MemoryTag::kGrad);
    Tensor dw = Tensor::Zeros({c}, DType::kF32, MemoryTag::kGrad);
    RMSNormBackward(dout, x, w, rstd, dx, dw);
    const std::string s = ShapeToString(shape);
    ExpectGradientMatches(loss, x, dx, "RMSNorm dx " + s, WideRowTolerance(c));
    ExpectGradientMatches(loss, w, dw, "RMSNorm dw " + s);
  }
}

}  // namespace
}  // namespace loom::runtime::kernels
