// Causal multi-head attention: forward against a naive double-precision implementation (scores,
// mask, softmax, weighted values), probs rows sum to one and vanish above the diagonal, and the
// backward against central finite differences of Σ out·dout with respect to qkv.
#include "runtime/kernels/attention.h"

#include <gtest/gtest.h>

#include <cmath>

#include "tests/runtime/kernels/test_util.h"

namespace loom::runtime::kernels {
namespace {

using testing::Dot;
using testing::ExpectAllNear;
using testing::ExpectGradientMatches;
using testing::RandomTensor;

struct AttnShape {
  int64_t b, t, nh, hs;
};

std::vector<AttnShape> Shapes() {
  // T = 150: three blocks of the causal blocking (kernels/cpu/attention.cc), the last partial.
  return {{1, 1, 1, 1}, {2, 7, 3, 5}, {1, 33, 2, 4}, {1, 64, 4, 16}, {2, 150, 2, 8}};
}

std::vector<double> ReferenceAttention(const Tensor& qkv, const AttnShape& s) {
  const std::vector<float> x = qkv.ToF32Vector();
  const int64_t C = s.nh * s.hs;
  std::vector<double> out(static_cast<size_t>(s.b * s.t * C), 0.0);
  auto at = [&](int64_t b, int64_t t, int64_t part, int64_t h, int64_t i) {
    return double{x[(b * s.t + t) * 3 * C + part * C + h * s.hs + i]};
  };
  for (int64_t b = 0; b < s.b; ++b) {
    for (int64_t h = 0; h < s.nh; ++h) {
      for (int64_t t = 0; t < s.t; ++t) {
        std::vector<double> score(static_cast<size_t>(t + 1));
        double mx = -1e300, sum = 0;
        for (int64_t u = 0; u <= t; ++u) {
          double d = 0;
          for (int64_t i = 0; i < s.hs; ++i) d += at(b, t, 0, h, i) * at(b, u, 1, h, i);
          score[u] = d / std::sqrt(double(s.hs));
          mx = std::max(mx, score[u]);
        }
        for (double& v : score) sum += (v = std::exp(v - mx));
        for (int64_t i = 0; i < s.hs; ++i) {
          double o = 0;
          for (int64_t u = 0; u <= t; ++u) o += score[u] / sum * at(b, u, 2, h, i);
          out[(b * s.t + t) * C + h * s.hs + i] = o;
        }
      }
    }
  }
  return out;
}

TEST(AttentionTest, ForwardMatchesNaive) {
  for (const AttnShape& s : Shapes()) {
    const int64_t C = s.nh * s.hs;
    Tensor qkv = RandomTensor({s.b, s.t, 3 * C}, 1);
    Tensor out = Tensor::Empty({s.b, s.t, C}, DType::kF32, MemoryTag::kActivation);
    Tensor probs = Tensor::Empty({s.b, s.nh, s.t, s.t}, DType::kF32, MemoryTag::kActivation);
    AttentionForward(qkv, s.nh, out, probs);
    const std::string what = "attention " + qkv.DebugString() + " nh=" + std::to_string(s.nh);
    ExpectAllNear(out, ReferenceAttention(qkv, s), 1e-5, 1e-4, what);
    const float* p = probs.data<float>();
    for (int64_t row = 0; row < s.b * s.nh * s.t; ++row) {
      const int64_t t = row % s.t;
      double sum = 0;
      for (int64_t u = 0; u < s.t; ++u) {
        if (u > t) {
          ASSERT_EQ(p[row * s.t + u], 0.0f) << what;
        }
        sum += p[row * s.t + u];
      }
      ASSERT_NEAR(sum, 1.0, 1e-5) << what;
    }
  }
}

TEST(AttentionTest, BackwardMatchesFiniteDifferences) {
  for (const AttnShape& s : Shapes()) {
    const int64_t C = s.nh * s.hs;
    Tensor qkv = RandomTensor({s.b, s.t, 3 * C}, 2);
    Tensor dout = RandomTensor({s.b, s.t, C}, 3);
    Tensor out = Tensor::Empty({s.b, s.t, C}, DType::kF32, MemoryTag::kActivation);
    Tensor probs = Tensor::Empty({s.b, s.nh, s.t, s.t}, DType::kF32, MemoryTag::kActivation);
    auto loss = [&] {
      AttentionForward(qkv, s.nh, out, probs);
      return Dot(out, dout);
    };
    loss();
    Tensor dqkv = Tensor::Zeros(qkv.shape(), DType::kF32, MemoryTag::kGrad);
    AttentionBackward(dout, qkv, probs, s.nh, dqkv);
    ExpectGradientMatches(loss, qkv, dqkv, "attention dqkv " + qkv.DebugString());
  }
}

}  // namespace
}  // namespace loom::runtime::kernels
