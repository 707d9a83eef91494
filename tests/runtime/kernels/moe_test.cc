// MoE kernels: router scores and top-k gating against formulas evaluated in double and a brute
// force choice (node-limited routing included), the routing plan against a direct count of each
// expert's slots (capacity drops too), permute / combine against index loops, and every backward
// (scores, gates, combine, grouped GEMM) against central finite differences.
#include "runtime/kernels/moe.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <numeric>
#include <random>

#include "tests/runtime/kernels/test_util.h"

namespace loom::runtime::kernels {
namespace {

using testing::Dot;
using testing::ExpectAllNear;
using testing::ExpectGradientMatches;
using testing::RandomTensor;

Tensor F32(const Shape& shape) { return Tensor::Zeros(shape, DType::kF32, MemoryTag::kActivation); }
Tensor I32(const Shape& shape) { return Tensor::Zeros(shape, DType::kI32, MemoryTag::kActivation); }
std::vector<int32_t> Ints(const Tensor& t) {
  return {t.data<int32_t>(), t.data<int32_t>() + t.numel()};
}

TEST(MoeKernelsTest, RouterScoresMatchTheFormulasAndFiniteDifferences) {
  for (RouterScore kind : {RouterScore::kSoftmax, RouterScore::kSigmoid}) {
    Tensor logits = RandomTensor({5, 7}, 1, 2.0f);
    Tensor scores = F32({5, 7});
    RouterScores(logits, kind, scores);
    std::vector<double> expected;
    const std::vector<float> l = logits.ToF32Vector();
    for (int t = 0; t < 5; ++t) {
      double sum = 0;
      for (int j = 0; j < 7; ++j) sum += std::exp(static_cast<double>(l[t * 7 + j]));
      for (int j = 0; j < 7; ++j) {
        const double v = l[t * 7 + j];
        expected.push_back(kind == RouterScore::kSoftmax ? std::exp(v) / sum
                                                         : 1.0 / (1.0 + std::exp(-v)));
      }
    }
    ExpectAllNear(scores, expected, 1e-6, 1e-5, "scores");
    const Tensor dscores = RandomTensor({5, 7}, 2);
    Tensor dlogits = F32({5, 7});
    RouterScoresBackward(dscores, scores, kind, dlogits);
    auto loss = [&] {
      RouterScores(logits, kind, scores);
      return Dot(scores, dscores);
    };
    ExpectGradientMatches(loss, logits, dlogits, "dlogits", {.step = 1e-3});
  }
}

// The k best of `v` among `allowed` by a full sort in double (ties to the lower index).
std::vector<int> BruteTopK(const std::vector<double>& v, const std::vector<bool>& allowed, int k) {
  std::vector<int> idx;
  for (int i = 0; i < static_cast<int>(v.size()); ++i) {
    if (allowed[i]) idx.push_back(i);
  }
  std::stable_sort(idx.begin(), idx.end(), [&](int a, int b) { return v[a] > v[b]; });
  idx.resize(k);
  return idx;
}

TEST(MoeKernelsTest, TopKChoosesByScorePlusBiasWithinTheBestGroups) {
  const int n = 9, e = 12, k = 3;
  const Tensor scores = RandomTensor({n, e}, 3);
  const Tensor bias = RandomTensor({e}, 4, 0.5f);
  for (auto [groups, top_groups] : {std::pair{1, 1}, std::pair{4, 2}, std::pair{6, 2}}) {
    for (bool normalize : {true, false}) {
      const TopKOptions o{.k = k,
                          .groups = groups,
                          .top_groups = top_groups,
                          .normalize = normalize,
                          .scale = 2.5f};
      Tensor experts = I32({n, k}), gates = F32({n, k});
      TopKGate(scores, bias, o, experts, gates);
      const std::vector<float> s = scores.ToF32Vector(), b = bias.ToF32Vector();
      std::vector<double> expected_gates;
      for (int t = 0; t < n; ++t) {
        std::vector<double> choice(e);
        for (int j = 0; j < e; ++j) choice[j] = static_cast<double>(s[t * e + j]) + b[j];
        // Group score: the sum of a group's two best choice values.
        const int per = e / groups;
        std::vector<double> group_score(groups);
        for (int g = 0; g < groups; ++g) {
          std::vector<double> in(choice.begin() + g * per, choice.begin() + (g + 1) * per);
          std::sort(in.rbegin(), in.rend());
          group_score[g] = in[0] + (per > 1 ? in[1] : 0.0);
        }
        const std::vector<int> best_groups =
            BruteTopK(group_score, std::vector<bool>(groups, true), top_groups);
        std::vector<bool> allowed(e, false);
        for (int g : best_groups) std::fill_n(allowed.begin() + g * per, per, true);
        const std::vector<int> want = BruteTopK(choice, allowed, k);
        double sum = 0;
        for (int j : want) sum += s[t * e + j];
        for (int i = 0; i < k; ++i) {
          EXPECT_EQ(experts.data<int32_t>()[t * k + i], want[i])
              << "token " << t << " choice " << i << " groups " << groups;
          expected_gates.push_back(2.5 * s[t * e + want[i]] / (normalize ? sum : 1.0));
        }
      }
      ExpectAllNear(gates, expected_gates, 1e-6, 1e-5, "gates");
    }
  }
}

TEST(MoeKernelsTest, TopKGateBackwardMatchesFiniteDifferences) {
  const int n = 6, e = 8, k = 3;
  for (bool normalize : {true, false}) {
    // Scores spaced apart so the finite-difference step never changes the choice.
    Tensor scores = F32({n, e});
    std::mt19937 gen(5);
    for (int t = 0; t < n; ++t) {
      std::vector<int> perm(e);
      std::iota(perm.begin(), perm.end(), 0);
      std::shuffle(perm.begin(), perm.end(), gen);
      for (int j = 0; j < e; ++j) scores.data<float>()[t * e + j] = 0.1f + 0.1f * perm[j];
    }
    const TopKOptions o{.k = k, .normalize = normalize, .scale = 1.5f};
    Tensor experts = I32({n, k}), gates = F32({n, k});
    const Tensor dgates = RandomTensor({n, k}, 6);
    TopKGate(scores, Tensor(), o, experts, gates);
    Tensor dscores = F32({n, e});
    TopKGateBackward(scores, experts, dgates, o, dscores);
    auto loss = [&] {
      TopKGate(scores, Tensor(), o, experts, gates);
      return Dot(gates, dgates);
    };
    ExpectGradientMatches(loss, scores, dscores, "dscores", {.step = 1e-3});
  }
}

TEST(MoeKernelsTest, RoutingPlanGroupsSlotsByExpertAndDropsBeyondCapacity) {
  const int n = 40, k = 2, e = 5;
  Tensor experts = I32({n, k});
  std::mt19937 gen(7);
  std::discrete_distribution<int> skewed({8, 4, 2, 1, 0});  // expert 4 gets nothing
  for (int t = 0; t < n; ++t) {
    int a = skewed(gen), b = skewed(gen);
    while (b == a) b = skewed(gen);
    experts.data<int32_t>()[t * k] = a;
    experts.data<int32_t>()[t * k + 1] = b;
  }
  for (int64_t capacity : {int64_t{0}, ExpertCapacity(1.0, n, k, e)}) {
    const RoutingPlan plan = PlanRouting(experts, e, capacity);
    // Independent count: walk the slots in token order, keeping the first `capacity` per expert.
    std::vector<int64_t> load(e, 0), kept(e, 0);
    int64_t dropped = 0;
    std::vector<std::vector<int>> slots_of(e);
    for (int i = 0; i < n * k; ++i) {
      const int x = experts.data<int32_t>()[i];
      ++load[x];
      if (capacity == 0 || kept[x] < capacity) {
        ++kept[x];
        slots_of[x].push_back(i);
      } else {
        ++dropped;
      }
    }
    EXPECT_EQ(plan.load, load);
    EXPECT_EQ(plan.counts, kept);
    EXPECT_EQ(plan.dropped, dropped) << "capacity " << capacity;
    int row = 0;
    std::vector<int32_t> want(n * k, -1);
    for (int x = 0; x < e; ++x) {
      for (int i : slots_of[x]) want[i] = row++;
    }
    EXPECT_EQ(Ints(plan.row_of), want);
    EXPECT_EQ(plan.rows(), row);
  }
  EXPECT_EQ(ExpertCapacity(1.25, 10, 2, 4), 7);  // ceil(6.25)
}

// MoePermute moves rows bitwise: 4-byte words that are not numbers (FP8 rows carried as words,
// NaN payloads, signalling NaNs, denormals) come out with the same bits, so the MoE layer can
// forward packed FP8 rows through it.
TEST(MoeKernelsTest, PermuteMovesRowsBitwise) {
  const std::vector<uint32_t> words = {0x7fa00001u, 0xffc12345u, 0x00000001u, 0x80000000u,
                                       0x3f800000u, 0x7f800000u, 0x12345678u, 0xdeadbeefu};
  Tensor x = Tensor::Empty({2, 4}, DType::kF32, MemoryTag::kActivation);
  std::memcpy(x.raw_data(), words.data(), words.size() * sizeof(uint32_t));
  const Tensor row_of = Tensor::FromVector<int32_t>({2, 2}, {2, -1, 0, 1}, MemoryTag::kActivation);
  Tensor xp = F32({3, 4});
  MoePermute(x, row_of, xp);
  std::vector<uint32_t> got(12);
  std::memcpy(got.data(), xp.raw_data(), got.size() * sizeof(uint32_t));
  const std::vector<uint32_t> second(words.begin() + 4, words.end());
  const std::vector<uint32_t> first(words.begin(), words.begin() + 4);
  EXPECT_EQ(std::vector<uint32_t>(got.begin(), got.begin() + 4), second);
  EXPECT_EQ(std::vector<uint32_t>(got.begin() + 4, got.begin() + 8), second);
  EXPECT_EQ(std::vector<uint32_t>(got.begin() + 8, got.end()), first);
}

// No tokens at all (a rank that received nothing): permute and combine do nothing, no division by
// zero.
TEST(MoeKernelsTest, PermuteAndCombineOfNoRows) {
  const Tensor row_of = Tensor::Zeros({0, 2}, DType::kI32, MemoryTag::kActivation);
  const Tensor x = F32({0, 4}), gates = F32({0, 2});
  Tensor xp = F32({0, 4}), y = F32({0, 4}), dy = F32({0, 4}), dgates = F32({0, 2});
  MoePermute(x, row_of, xp);
  MoeCombine(xp, row_of, &gates, y);
  MoeCombineBackward(y, xp, row_of, gates, dy, dgates);
  EXPECT_EQ(y.numel(), 0);
}

// -1 marks a slot routed elsewhere: row -1, and neither load nor drop.
TEST(MoeKernelsTest, RoutingPlanSkipsSlotsMarkedNotHere) {
  const Tensor experts =
      Tensor::FromVector<int32_t>({3, 2}, {1, -1, -1, 0, 1, 0}, MemoryTag::kActivation);
  const RoutingPlan plan = PlanRouting(experts, 2, 0);
  EXPECT_EQ(Ints(plan.row_of), (std::vector<int32_t>{2, -1, -1, 0, 3, 1}));
  EXPECT_EQ(plan.load, (std::vector<int64_t>{2, 2}));
  EXPECT_EQ(plan.dropped, 0);
  EXPECT_EQ(plan.rows(), 4);
}

TEST(MoeKernelsTest, PermuteAndCombineMoveRowsAndTheirGradients) {
  const int n = 7, k = 2, e = 3, c = 5;
  Tensor experts = I32({n, k});
  for (int t = 0; t < n; ++t) {
    experts.data<int32_t>()[t * k] = t % e;
    experts.data<int32_t>()[t * k + 1] = (t + 1) % e;
  }
  const RoutingPlan plan = PlanRouting(experts, e, /*capacity=*/3);  // some slots dropped
  ASSERT_GT(plan.dropped, 0);
  const int64_t rows = plan.rows();
  Tensor x = RandomTensor({n, c}, 8);
  Tensor xp = F32({rows, c});
  MoePermute(x, plan.row_of, xp);
  const std::vector<int32_t> row_of = Ints(plan.row_of);
  for (int i = 0; i < n * k; ++i) {
    if (row_of[i] < 0) continue;
    for (int j = 0; j < c; ++j) {
      EXPECT_EQ(xp.data<float>()[row_of[i] * c + j], x.data<float>()[(i / k) * c + j]);
    }
  }
  Tensor y = RandomTensor({rows, c}, 9);
  Tensor gates = RandomTensor({n, k}, 10);
  Tensor out = F32({n, c});
  MoeCombine(y, plan.row_of, &gates, out);
  std::vector<double> expected(n * c, 0.0);
  for (int i = 0; i < n * k; ++i) {
    if (row_of[i] < 0) continue;
    for (int j = 0; j < c; ++j) {
      expected[(i / k) * c + j] +=
          static_cast<double>(gates.data<float>()[i]) * y.data<float>()[row_of[i] * c + j];
    }
  }
  ExpectAllNear(out, expected, 1e-6, 1e-5, "combine");

  const Tensor dout = RandomTensor({n, c}, 11);
  Tensor dy = F32({rows, c}), dgates = F32({n, k});
  MoeCombineBackward(dout, y, plan.row_of, gates, dy, dgates);
  auto combine_loss = [&] {
    MoeCombine(y, plan.row_of, &gates, out);
    return Dot(out, dout);
  };
  ExpectGradientMatches(combine_loss, y, dy, "combine dy");
  ExpectGradientMatches(combine_loss, gates, dgates, "combine dgates");
  // Permute's gradient is the ungated combine.
  const Tensor dxp = RandomTensor({rows, c}, 12);
  Tensor dx = F32({n, c});
  MoeCombine(dxp, plan.row_of, nullptr, dx);
  auto permute_loss = [&] {
    MoePermute(x, plan.row_of, xp);
    return Dot(xp, dxp);
  };
  ExpectGradientMatches(permute_loss, x, dx, "permute dx");
}

TEST(MoeKernelsTest, GroupedMatmulMultipliesEachSegmentByItsGroup) {
  const int kin = 6, nout = 4;
  const std::vector<int64_t> rows = {3, 0, 5, 2};  // group 1 has no rows
  const std::vector<int> weight = {2, 1, 0, 2};    // two segments use group 2
  const int64_t total = 10;
  for (bool trans_b : {false, true}) {
    Tensor a = RandomTensor({total, kin}, 13);
    Tensor b = trans_b ? RandomTensor({3, nout, kin}, 14) : RandomTensor({3, kin, nout}, 14);
    Tensor out = F32({total, nout});
    GroupedMatmul(a, b, rows, weight, out, {.trans_b = trans_b});
    std::vector<double> expected;
    int64_t seg = 0, left = rows[0];
    for (int64_t r = 0; r < total; ++r) {
      while (left == 0) left = rows[++seg];
      --left;
      const int g = weight[seg];
      for (int j = 0; j < nout; ++j) {
        double s = 0;
        for (int q = 0; q < kin; ++q) {
          const float w = trans_b ? b.data<float>()[(g * nout + j) * kin + q]
                                  : b.data<float>()[(g * kin + q) * nout + j];
          s += static_cast<double>(a.data<float>()[r * kin + q]) * w;
        }
        expected.push_back(s);
      }
    }
    ExpectAllNear(out, expected, 1e-5, 1e-5, "grouped GEMM");

    const Tensor dout = RandomTensor({total, nout}, 15);
    Tensor da = F32(a.shape()), db = F32(b.shape());
    GroupedMatmulBackward(a, b, dout, rows, weight, &da, &db, {.trans_b = trans_b});
    auto loss = [&] {
      GroupedMatmul(a, b, rows, weight, out, {.trans_b = trans_b});
      return Dot(out, dout);
    };
    ExpectGradientMatches(loss, a, da, "grouped da");
    ExpectGradientMatches(loss, b, db, "grouped db");
    // Group 1 (no rows) gets an exact zero gradient.
    for (int i = 0; i < kin * nout; ++i) EXPECT_EQ(db.data<float>()[kin * nout + i], 0.0f);
  }
}

// FP8 dispatch rows: every element within e4m3's rounding of its block-scaled value (relative
// 2^-4, or scale · 2^-10 in the subnormal range), each block's largest magnitude exact, a zero
// block exact, on a width that leaves a short last block (300 = 128 + 128 + 44).
TEST(MoeKernelsTest, Fp8RowsRoundTripWithinE4m3Rounding) {
  const int64_t rows = 5, c = 300;
  Tensor x = RandomTensor({rows, c}, 16, 3.0f);
  for (int64_t j = 0; j < 128; ++j) x.data<float>()[2 * c + j] = 0.0f;  // row 2, block 0: zeros
  x.data<float>()[c + 7] = 1e-6f;  // a tiny value in a block of large ones
  EXPECT_EQ(Fp8RowWidth(c), c + 12);
  EXPECT_EQ(Fp8RowWidth(62), 64 + 4);  // values padded to 4 bytes, then one scale
  Tensor packed = Tensor::Empty({rows, Fp8RowWidth(c)}, DType::kF8E4M3, MemoryTag::kActivation);
  Tensor back = F32({rows, c});
  QuantizeRowsFp8(x, packed);
  DequantizeRowsFp8(packed, back);
  const float* a = x.data<float>();
  const float* b = back.data<float>();
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t lo = 0; lo < c; lo += kFp8Block) {
      const int64_t hi = std::min(c, lo + kFp8Block);
      double amax = 0;
      for (int64_t j = lo; j < hi; ++j) amax = std::max(amax, std::fabs(double{a[r * c + j]}));
      const double scale = amax > 0 ? amax / 448.0 : 1.0;
      for (int64_t j = lo; j < hi; ++j) {
        const double v = a[r * c + j], got = b[r * c + j];
        EXPECT_LE(std::fabs(got - v), std::fabs(v) / 16 + scale / 1024 + 1e-12)
            << "row " << r << " element " << j;
        if (std::fabs(v) == amax) {
          EXPECT_FLOAT_EQ(got, v) << "block max, row " << r;
        }
      }
    }
  }
  for (int64_t j = 0; j < 128; ++j) EXPECT_EQ(b[2 * c + j], 0.0f);
}

}  // namespace
}  // namespace loom::runtime::kernels
