// Causal multi-head attention: forward against a naive double-precision implementation (scores,
// mask, softmax, weighted values), probs rows sum to one and vanish above the diagonal, and the
// backward against central finite differences of Σ out·dout with respect to qkv; on bf16 operands
// (autocast) forward and backward against those checked f32 results on the same bf16 values. The
// flash form (no probabilities kept) the same way, with its log-sum-exp.
#include "runtime/kernels/attention.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

#include "tests/runtime/kernels/test_util.h"

namespace loom::runtime::kernels {
namespace {

using testing::Dot;
using testing::ExpectAllNear;
using testing::ExpectGradientMatches;
using testing::RandomTensor;
using testing::ToDType;

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

// Attention on the bf16 values of a random qkv: every output in f32 and in bf16 (autocast).
struct Bf16Run {
  Bf16Run(const AttnShape& s, uint32_t seed)
      : qkv16(ToDType(RandomTensor({s.b, s.t, 3 * s.nh * s.hs}, seed), DType::kBF16)),
        qkv(ToDType(qkv16, DType::kF32)),
        dout(RandomTensor({s.b, s.t, s.nh * s.hs}, seed + 1)),
        out(Tensor::Empty({s.b, s.t, s.nh * s.hs}, DType::kF32, MemoryTag::kActivation)),
        out16(Tensor::Empty(out.shape(), DType::kF32, MemoryTag::kActivation)),
        probs(Tensor::Empty({s.b, s.nh, s.t, s.t}, DType::kF32, MemoryTag::kActivation)),
        probs16(Tensor::Empty(probs.shape(), DType::kBF16, MemoryTag::kActivation)),
        dqkv(Tensor::Zeros(qkv.shape(), DType::kF32, MemoryTag::kGrad)),
        dqkv16(Tensor::Zeros(qkv.shape(), DType::kF32, MemoryTag::kGrad)) {
    AttentionForward(qkv, s.nh, out, probs);
    AttentionForward(qkv16, s.nh, out16, probs16);
    // The f32 backward sees dout as the bf16 one does after its rounding.
    AttentionBackward(ToDType(ToDType(dout, DType::kBF16), DType::kF32), qkv, probs, s.nh, dqkv);
    AttentionBackward(dout, qkv16, probs16, s.nh, dqkv16);
  }
  Tensor qkv16, qkv, dout, out, out16, probs, probs16, dqkv, dqkv16;
};

std::vector<double> AsDoubles(const Tensor& t) {
  const std::vector<float> v = t.ToF32Vector();
  return {v.begin(), v.end()};
}

double MaxAbs(const Tensor& t) {
  double m = 0.0;
  for (float x : t.ToF32Vector()) m = std::max(m, double{std::fabs(x)});
  return m;
}

// bf16 rounds the probabilities (2^-9 relative each) before P·V: out is off from the f32 result
// by at most 2^-9 · max|v| (stated with a factor 2 of margin), probs by one bf16 rounding.
TEST(AttentionTest, Bf16ForwardRoundsOnlyTheProbabilities) {
  for (const AttnShape& s : Shapes()) {
    const Bf16Run r(s, 11);
    const std::string what = "bf16 attention " + r.qkv.DebugString();
    ExpectAllNear(r.out16, AsDoubles(r.out), MaxAbs(r.qkv) / 256, 0.0, what + " out");
    ExpectAllNear(ToDType(r.probs16, DType::kF32), AsDoubles(r.probs), 1e-6, 1.0 / 256,
                  what + " probs");
  }
}

// Backward on bf16 operands against the f32 backward on the same values: rounding P and dS (and
// dout, given rounded to both) to bf16 moves each product by under 1 % of the largest gradient.
TEST(AttentionTest, Bf16BackwardMatchesTheF32BackwardOnTheSameValues) {
  for (const AttnShape& s : Shapes()) {
    const Bf16Run r(s, 21);
    ExpectAllNear(r.dqkv16, AsDoubles(r.dqkv), 1e-2 * MaxAbs(r.dqkv), 1e-2,
                  "bf16 attention dqkv " + r.qkv.DebugString());
  }
}

// The flash form: out against the naive double-precision attention, lse against log Σ exp of the
// scaled scores computed in double, and the backward (which recomputes the probabilities from
// lse) against central finite differences; on bf16 qkv the same as on its f32 values (the flash
// form reads bf16 and computes in f32, rounding nothing else), bitwise.
TEST(FlashAttentionTest, ForwardMatchesNaiveAndLseIsTheLogSumExp) {
  for (const AttnShape& s : Shapes()) {
    const int64_t C = s.nh * s.hs;
    Tensor qkv = RandomTensor({s.b, s.t, 3 * C}, 4);
    Tensor out = Tensor::Empty({s.b, s.t, C}, DType::kF32, MemoryTag::kActivation);
    Tensor lse = Tensor::Empty({s.b, s.nh, s.t}, DType::kF32, MemoryTag::kActivation);
    FlashAttentionForward(qkv, s.nh, out, lse);
    const std::string what = "flash " + qkv.DebugString() + " nh=" + std::to_string(s.nh);
    ExpectAllNear(out, ReferenceAttention(qkv, s), 1e-5, 1e-4, what);
    const std::vector<float> x = qkv.ToF32Vector();
    std::vector<double> want;
    for (int64_t b = 0; b < s.b; ++b) {
      for (int64_t h = 0; h < s.nh; ++h) {
        for (int64_t t = 0; t < s.t; ++t) {
          double sum = 0;
          for (int64_t u = 0; u <= t; ++u) {
            double d = 0;
            for (int64_t i = 0; i < s.hs; ++i) {
              d += double{x[(b * s.t + t) * 3 * C + h * s.hs + i]} *
                   x[(b * s.t + u) * 3 * C + C + h * s.hs + i];
            }
            sum += std::exp(d / std::sqrt(double(s.hs)));
          }
          want.push_back(std::log(sum));
        }
      }
    }
    ExpectAllNear(lse, want, 1e-5, 1e-5, what + " lse");
  }
}

TEST(FlashAttentionTest, BackwardMatchesFiniteDifferences) {
  for (const AttnShape& s : Shapes()) {
    const int64_t C = s.nh * s.hs;
    Tensor qkv = RandomTensor({s.b, s.t, 3 * C}, 5);
    Tensor dout = RandomTensor({s.b, s.t, C}, 6);
    Tensor out = Tensor::Empty({s.b, s.t, C}, DType::kF32, MemoryTag::kActivation);
    Tensor lse = Tensor::Empty({s.b, s.nh, s.t}, DType::kF32, MemoryTag::kActivation);
    auto loss = [&] {
      FlashAttentionForward(qkv, s.nh, out, lse);
      return Dot(out, dout);
    };
    loss();
    Tensor dqkv = Tensor::Zeros(qkv.shape(), DType::kF32, MemoryTag::kGrad);
    FlashAttentionBackward(dout, qkv, out, lse, s.nh, dqkv);
    ExpectGradientMatches(loss, qkv, dqkv, "flash attention dqkv " + qkv.DebugString());
  }
}

TEST(FlashAttentionTest, Bf16QkvIsItsF32ValuesBitwise) {
  const AttnShape s{2, 33, 2, 8};
  const int64_t C = s.nh * s.hs;
  const Tensor qkv16 = ToDType(RandomTensor({s.b, s.t, 3 * C}, 7), DType::kBF16);
  const Tensor qkv = ToDType(qkv16, DType::kF32);
  const Tensor dout = RandomTensor({s.b, s.t, C}, 8);
  std::vector<std::vector<float>> results[2];
  for (const Tensor* in : {&qkv, &qkv16}) {
    Tensor out = Tensor::Empty({s.b, s.t, C}, DType::kF32, MemoryTag::kActivation);
    Tensor lse = Tensor::Empty({s.b, s.nh, s.t}, DType::kF32, MemoryTag::kActivation);
    Tensor dqkv = Tensor::Zeros(qkv.shape(), DType::kF32, MemoryTag::kGrad);
    FlashAttentionForward(*in, s.nh, out, lse);
    FlashAttentionBackward(dout, *in, out, lse, s.nh, dqkv);
    results[in == &qkv16] = {out.ToF32Vector(), lse.ToF32Vector(), dqkv.ToF32Vector()};
  }
  EXPECT_EQ(results[0], results[1]);
}

TEST(AttentionTest, RejectsMixedDTypes) {
  const Tensor qkv16 = ToDType(RandomTensor({1, 4, 6}, 1), DType::kBF16);
  Tensor out = Tensor::Empty({1, 4, 2}, DType::kF32, MemoryTag::kActivation);
  Tensor probs = Tensor::Empty({1, 1, 4, 4}, DType::kF32, MemoryTag::kActivation);
  EXPECT_DEATH(AttentionForward(qkv16, 1, out, probs), "probs");
}

}  // namespace
}  // namespace loom::runtime::kernels
