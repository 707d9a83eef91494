// Cross-entropy: losses against a double-precision log-sum-exp, dlogits against central finite
// differences, and the vocabulary-sharded composition (stats per shard, rescale to the global max,
// sum) against the unsharded result.
#include "runtime/kernels/cross_entropy.h"

#include <gtest/gtest.h>

#include <cmath>

#include "tests/runtime/kernels/test_util.h"

namespace loom::runtime::kernels {
namespace {

using testing::ExpectAllNear;
using testing::ExpectGradientMatches;
using testing::RandomIds;
using testing::RandomTensor;

std::vector<double> ReferenceLosses(const Tensor& logits, const Tensor& targets) {
  const int64_t v = logits.dim(-1), n = logits.numel() / v;
  const std::vector<float> l = logits.ToF32Vector();
  std::vector<double> out;
  for (int64_t r = 0; r < n; ++r) {
    double mx = -1e300, sum = 0;
    for (int64_t j = 0; j < v; ++j) mx = std::max(mx, double{l[r * v + j]});
    for (int64_t j = 0; j < v; ++j) sum += std::exp(l[r * v + j] - mx);
    out.push_back(std::log(sum) + mx - l[r * v + targets.data<int32_t>()[r]]);
  }
  return out;
}

Tensor Rows(int64_t n) { return Tensor::Empty({n}, DType::kF32, MemoryTag::kActivation); }

TEST(CrossEntropyTest, ForwardAndBackward) {
  for (const Shape& shape : {Shape{1, 1}, Shape{7, 33}, Shape{2, 3, 7}, Shape{5, 4099}}) {
    const int64_t v = shape.back();
    const int64_t n = NumElements(shape) / v;
    Tensor logits = RandomTensor(shape, 1, 3.0f);
    Tensor targets = RandomIds({n}, static_cast<int32_t>(v), 2);
    Tensor dloss = RandomTensor({n}, 3);
    Tensor losses = Rows(n);
    Tensor dlogits = Tensor::Zeros(shape, DType::kF32, MemoryTag::kGrad);
    CrossEntropyForwardBackward(logits, targets, dloss, losses, dlogits);
    ExpectAllNear(losses, ReferenceLosses(logits, targets), 1e-5, 1e-5,
                  "losses " + ShapeToString(shape));
    Tensor scratch = Tensor::Zeros(shape, DType::kF32, MemoryTag::kGrad);
    auto loss = [&] {
      Tensor l = Rows(n);
      CrossEntropyForwardBackward(logits, targets, dloss, l, scratch);
      return testing::Dot(l, dloss);
    };
    ExpectGradientMatches(loss, logits, dlogits, "dlogits " + ShapeToString(shape),
                          {.step = 1e-2, .atol = 1e-3, .rtol = 2e-2});
  }
}

TEST(CrossEntropyTest, ShardedCompositionMatchesUnsharded) {
  const int64_t n = 9, v = 4099;
  Tensor logits = RandomTensor({n, v}, 4, 4.0f);
  Tensor targets = RandomIds({n}, v, 5);
  Tensor dloss = RandomTensor({n}, 6);
  Tensor losses = Rows(n);
  Tensor dlogits = Tensor::Zeros({n, v}, DType::kF32, MemoryTag::kGrad);
  CrossEntropyForwardBackward(logits, targets, dloss, losses, dlogits);

  // Three uneven shards of the vocabulary, as three tensor-parallel ranks would hold them.
  const std::vector<int64_t> bounds = {0, 1000, 1001, v};
  std::vector<Tensor> shard_logits, maxes, sums, tls;
  for (size_t s = 0; s + 1 < bounds.size(); ++s) {
    const int64_t w = bounds[s + 1] - bounds[s];
    Tensor part = Tensor::Empty({n, w}, DType::kF32, MemoryTag::kActivation);
    for (int64_t r = 0; r < n; ++r) {
      std::copy_n(logits.data<float>() + r * v + bounds[s], w, part.data<float>() + r * w);
    }
    shard_logits.push_back(part);
    maxes.push_back(Rows(n));
    sums.push_back(Rows(n));
    tls.push_back(Rows(n));
    CrossEntropyStats(part, targets, bounds[s], maxes.back(), sums.back(), tls.back());
  }
  // The all-reduces, done by hand: max of maxes, then sums of rescaled sums and target logits.
  Tensor gmax = Rows(n), gsum = Tensor::Zeros({n}, DType::kF32, MemoryTag::kActivation),
         gtl = Tensor::Zeros({n}, DType::kF32, MemoryTag::kActivation);
  for (int64_t r = 0; r < n; ++r) {
    float m = -INFINITY;
    for (const Tensor& t : maxes) m = std::max(m, t.data<float>()[r]);
    gmax.data<float>()[r] = m;
  }
  for (size_t s = 0; s < maxes.size(); ++s) {
    CrossEntropyRescaleSumExp(maxes[s], gmax, sums[s]);
    for (int64_t r = 0; r < n; ++r) {
      gsum.data<float>()[r] += sums[s].data<float>()[r];
      gtl.data<float>()[r] += tls[s].data<float>()[r];
    }
  }
  Tensor sharded_losses = Rows(n);
  CrossEntropyLoss(gmax, gsum, gtl, sharded_losses);
  const std::vector<float> unsharded = losses.ToF32Vector();
  const std::vector<double> expected_losses(unsharded.begin(), unsharded.end());
  ExpectAllNear(sharded_losses, expected_losses, 1e-5, 1e-5, "sharded losses");
  for (size_t s = 0; s + 1 < bounds.size(); ++s) {
    const int64_t w = bounds[s + 1] - bounds[s];
    Tensor dpart = Tensor::Zeros({n, w}, DType::kF32, MemoryTag::kGrad);
    CrossEntropyBackward(shard_logits[s], targets, bounds[s], gmax, gsum, dloss, dpart);
    std::vector<double> expected;
    for (int64_t r = 0; r < n; ++r) {
      for (int64_t j = 0; j < w; ++j)
        expected.push_back(dlogits.data<float>()[r * v + bounds[s] + j]);
    }
    ExpectAllNear(dpart, expected, 1e-7, 1e-5, "sharded dlogits, shard " + std::to_string(s));
  }
}

TEST(CrossEntropyDeathTest, TargetOutsideVocabulary) {
  Tensor logits = RandomTensor({2, 5}, 7);
  Tensor targets = Tensor::FromVector<int32_t>({2}, {1, 5}, MemoryTag::kActivation);
  Tensor dloss = RandomTensor({2}, 8);
  Tensor losses = Rows(2);
  Tensor dlogits = Tensor::Zeros({2, 5}, DType::kF32, MemoryTag::kGrad);
  EXPECT_DEATH(CrossEntropyForwardBackward(logits, targets, dloss, losses, dlogits),
               R"(CrossEntropyForwardBackward: targets\[1\] = 5 is outside \[0, 5\))");
}

}  // namespace
}  // namespace loom::runtime::kernels
