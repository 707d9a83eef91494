// Matmul and BiasAdd: forward against a naive double-precision GEMM for every transpose
// combination on odd and even shapes; backward against central finite differences; 16-bit
// operands against the product of their exactly decoded values.
#include "runtime/kernels/matmul.h"

#include <gtest/gtest.h>

#include <cmath>

#include "runtime/kernels/bias_add.h"
#include "runtime/kernels/cpu/gemm.h"
#include "tests/runtime/kernels/test_util.h"

namespace loom::runtime::kernels {
namespace {

using testing::Dot;
using testing::ExpectAllNear;
using testing::ExpectGradientMatches;
using testing::RandomTensor;
using testing::ToDType;

// Naive out = alpha · op(a) · op(b) + beta · out0 in double; a, b given as f32 values.
std::vector<double> ReferenceGemm(const std::vector<float>& a, const std::vector<float>& b,
                                  const std::vector<float>& out0, int64_t m, int64_t n, int64_t k,
                                  const MatmulOptions& o) {
  std::vector<double> out(static_cast<size_t>(m * n));
  for (int64_t i = 0; i < m; ++i) {
    for (int64_t j = 0; j < n; ++j) {
      double s = 0.0;
      for (int64_t p = 0; p < k; ++p) {
        const double av = o.trans_a ? a[p * m + i] : a[i * k + p];
        const double bv = o.trans_b ? b[j * k + p] : b[p * n + j];
        s += av * bv;
      }
      out[i * n + j] = o.alpha * s + (o.beta == 0.0f ? 0.0 : o.beta * out0[i * n + j]);
    }
  }
  return out;
}

struct GemmShape {
  int64_t m, n, k;
};

std::vector<GemmShape> Shapes() { return {{1, 1, 1}, {7, 5, 33}, {33, 7, 4}, {4, 4099, 3}}; }

TEST(MatmulTest, ForwardMatchesNaiveForAllTransposes) {
  uint32_t seed = 1;
  for (const GemmShape& s : Shapes()) {
    for (bool ta : {false, true}) {
      for (bool tb : {false, true}) {
        for (float beta : {0.0f, 1.0f}) {
          const MatmulOptions o{.trans_a = ta, .trans_b = tb, .alpha = 0.5f, .beta = beta};
          Tensor a = RandomTensor(ta ? Shape{s.k, s.m} : Shape{s.m, s.k}, seed++);
          Tensor b = RandomTensor(tb ? Shape{s.n, s.k} : Shape{s.k, s.n}, seed++);
          Tensor out = RandomTensor({s.m, s.n}, seed++);
          const std::vector<float> out0 = out.ToF32Vector();
          Matmul(a, b, out, o);
          ExpectAllNear(
              out, ReferenceGemm(a.ToF32Vector(), b.ToF32Vector(), out0, s.m, s.n, s.k, o), 1e-5,
              1e-5,
              "m=" + std::to_string(s.m) + " n=" + std::to_string(s.n) + " k=" +
                  std::to_string(s.k) + " ta=" + std::to_string(ta) + " tb=" + std::to_string(tb));
        }
      }
    }
  }
}

TEST(MatmulTest, LeadingDimensionsFoldIntoRows) {
  Tensor a = RandomTensor({2, 3, 5}, 11);
  Tensor b = RandomTensor({5, 7}, 12);
  Tensor out = Tensor::Empty({2, 3, 7}, DType::kF32, MemoryTag::kActivation);
  Matmul(a, b, out);
  ExpectAllNear(out, ReferenceGemm(a.ToF32Vector(), b.ToF32Vector(), {}, 6, 7, 5, {}), 1e-5, 1e-5,
                "3-D a");
}

// A bias adds to every row of the product, leading dimensions folded, with bf16 compute too:
// against the naive product plus the bias, and bitwise the product followed by BiasAdd.
TEST(MatmulTest, BiasAddsToEveryRow) {
  const Tensor a = RandomTensor({2, 3, 5}, 13);
  const Tensor b = RandomTensor({7, 5}, 14);
  const Tensor bias = RandomTensor({7}, 15);
  for (DType compute : {DType::kF32, DType::kBF16}) {
    Tensor out = Tensor::Empty({2, 3, 7}, DType::kF32, MemoryTag::kActivation);
    Matmul(a, b, out, {.trans_b = true, .compute_dtype = compute, .bias = &bias});
    Tensor separate = Tensor::Empty({2, 3, 7}, DType::kF32, MemoryTag::kActivation);
    Matmul(a, b, separate, {.trans_b = true, .compute_dtype = compute});
    BiasAdd(separate, bias);
    EXPECT_EQ(out.ToF32Vector(), separate.ToF32Vector());
    if (compute != DType::kF32) continue;
    std::vector<double> want =
        ReferenceGemm(a.ToF32Vector(), b.ToF32Vector(), {}, 6, 7, 5, {.trans_b = true});
    const std::vector<float> bv = bias.ToF32Vector();
    for (size_t i = 0; i < want.size(); ++i) want[i] += bv[i % 7];
    ExpectAllNear(out, want, 1e-5, 1e-5, "bias");
  }
}

TEST(MatmulTest, EmptyInnerDimensionScalesOut) {
  Tensor a = Tensor::Empty({3, 0}, DType::kF32, MemoryTag::kActivation);
  Tensor b = Tensor::Empty({0, 2}, DType::kF32, MemoryTag::kActivation);
  Tensor out = Tensor::FromVector<float>({3, 2}, {1, 2, 3, 4, 5, 6}, MemoryTag::kActivation);
  Matmul(a, b, out, {.beta = 2.0f});
  EXPECT_EQ(out.ToF32Vector(), (std::vector<float>{2, 4, 6, 8, 10, 12}));
  Matmul(a, b, out);
  EXPECT_EQ(out.ToF32Vector(), (std::vector<float>(6, 0.0f)));
}

TEST(MatmulTest, SixteenBitOperandsAccumulateInF32) {
  for (DType dt : {DType::kBF16, DType::kF16}) {
    const int64_t m = 9, n = 17, k = 513;
    Tensor a = ToDType(RandomTensor({m, k}, 21), dt);
    Tensor b = ToDType(RandomTensor({n, k}, 22), dt);
    const MatmulOptions o{.trans_b = true};
    // Reference: exact product of the rounded operands.
    const std::vector<double> ref = ReferenceGemm(a.ToF32Vector(), b.ToF32Vector(), {}, m, n, k, o);
    Tensor out32 = Tensor::Empty({m, n}, DType::kF32, MemoryTag::kActivation);
    Matmul(a, b, out32, o);
    ExpectAllNear(out32, ref, 1e-4, 1e-5, std::string(DTypeName(dt)) + " -> f32");
    // A 16-bit result is the f32 result rounded once (relative error <= 2^-8 for bf16).
    Tensor out16 = Tensor::Empty({m, n}, dt, MemoryTag::kActivation);
    Matmul(a, b, out16, o);
    ExpectAllNear(out16, ref, 1e-3, dt == DType::kBF16 ? 1.0 / 256 : 1.0 / 2048,
                  std::string(DTypeName(dt)) + " -> " + std::string(DTypeName(dt)));
  }
}

// Rounds every element of an f32 tensor to its nearest bf16 value (kept as f32).
std::vector<float> RoundedToBF16(const Tensor& t) {
  std::vector<float> v = t.ToF32Vector();
  for (float& x : v) x = BF16ToF32(F32ToBF16(x));
  return v;
}

TEST(MatmulTest, Bf16ComputeRoundsOperandsAndAccumulatesInF32) {
  // Whichever path this CPU takes (native bf16 GEMM or widened to f32, logged at first use), the
  // result is the exact product of the bf16-rounded operands up to f32 summation error.
  uint32_t seed = 31;
  for (const GemmShape& s : Shapes()) {
    for (bool ta : {false, true}) {
      for (bool tb : {false, true}) {
        for (float beta : {0.0f, 1.0f}) {
          const MatmulOptions o{.trans_a = ta,
                                .trans_b = tb,
                                .alpha = 0.5f,
                                .beta = beta,
                                .compute_dtype = DType::kBF16};
          Tensor a = RandomTensor(ta ? Shape{s.k, s.m} : Shape{s.m, s.k}, seed++);
          Tensor b = RandomTensor(tb ? Shape{s.n, s.k} : Shape{s.k, s.n}, seed++);
          if (seed % 3 == 0) b = ToDType(b, DType::kBF16);  // mixed operand dtypes too
          Tensor out = RandomTensor({s.m, s.n}, seed++);
          const std::vector<float> out0 = out.ToF32Vector();
          const std::vector<double> ref =
              ReferenceGemm(RoundedToBF16(a), RoundedToBF16(b), out0, s.m, s.n, s.k, o);
          Matmul(a, b, out, o);
          ExpectAllNear(out, ref, 1e-5, 1e-5,
                        "bf16 compute m=" + std::to_string(s.m) + " n=" + std::to_string(s.n) +
                            " k=" + std::to_string(s.k) + " ta=" + std::to_string(ta) +
                            " tb=" + std::to_string(tb));
        }
      }
    }
  }
}

// bf16 operands inside wider rows (leading dimension > columns), as attention's heads are: the
// widening fallback and the path this CPU takes both give the exact product of the bf16 values up
// to f32 summation error, scaled by alpha and added to beta times the output.
TEST(MatmulTest, Bf16GemmOnStridedOperandsMatchesNaive) {
  uint32_t seed = 71;
  for (const GemmShape& s : Shapes()) {
    for (bool ta : {false, true}) {
      for (bool tb : {false, true}) {
        const int64_t a_rows = ta ? s.k : s.m, a_cols = ta ? s.m : s.k;
        const int64_t b_rows = tb ? s.n : s.k, b_cols = tb ? s.k : s.n;
        const int64_t lda = a_cols + 3, ldb = b_cols + 5;
        const Tensor a = ToDType(RandomTensor({a_rows, lda}, seed++), DType::kBF16);
        const Tensor b = ToDType(RandomTensor({b_rows, ldb}, seed++), DType::kBF16);
        auto packed = [](const Tensor& t, int64_t rows, int64_t cols) {
          const std::vector<float> v = t.ToF32Vector();
          std::vector<float> out;
          for (int64_t r = 0; r < rows; ++r) {
            out.insert(out.end(), v.begin() + r * t.dim(1), v.begin() + r * t.dim(1) + cols);
          }
          return out;
        };
        const std::vector<double> ref =
            ReferenceGemm(packed(a, a_rows, a_cols), packed(b, b_rows, b_cols), {}, s.m, s.n, s.k,
                          {.trans_a = ta, .trans_b = tb});
        const cpu::GemmShape shape{.trans_a = ta,
                                   .trans_b = tb,
                                   .m = s.m,
                                   .n = s.n,
                                   .k = s.k,
                                   .lda = lda,
                                   .ldb = ldb,
                                   .ldc = s.n};
        // alpha and beta: none, a scale alone (attention's scaled scores), and an accumulation.
        const Tensor c0 = RandomTensor({s.m, s.n}, seed++);
        for (const auto& [alpha, beta] : {std::pair{1.0f, 0.0f}, {0.125f, 0.0f}, {0.5f, 1.0f}}) {
          std::vector<double> expected(ref.size());
          for (size_t i = 0; i < ref.size(); ++i) {
            expected[i] = alpha * ref[i] + beta * static_cast<double>(c0.data<float>()[i]);
          }
          for (auto* gemm : {&cpu::GemmBf16Widened, &cpu::GemmBf16OrWidened}) {
            Tensor out = c0.Clone();
            gemm(shape, alpha, static_cast<const uint16_t*>(a.raw_data()),
                 static_cast<const uint16_t*>(b.raw_data()), beta, out.data<float>());
            ExpectAllNear(out, expected, 1e-5, 1e-5,
                          "strided bf16 m=" + std::to_string(s.m) + " n=" + std::to_string(s.n) +
                              " k=" + std::to_string(s.k) + " ta=" + std::to_string(ta) +
                              " tb=" + std::to_string(tb) + " alpha=" + std::to_string(alpha) +
                              " beta=" + std::to_string(beta) +
                              (gemm == &cpu::GemmBf16Widened ? " widened" : " this CPU's path"));
          }
        }
      }
    }
  }
}

TEST(MatmulTest, Bf16ComputeBackwardUsesRoundedOperands) {
  const int64_t m = 33, n = 7, k = 65;
  Tensor x = RandomTensor({m, k}, 41), w = RandomTensor({n, k}, 42), dy = RandomTensor({m, n}, 43);
  Tensor dx = Tensor::Zeros({m, k}, DType::kF32, MemoryTag::kGrad);
  Tensor dw = Tensor::Zeros({n, k}, DType::kF32, MemoryTag::kGrad);
  MatmulBackward(x, w, dy, &dx, &dw, {.trans_b = true, .compute_dtype = DType::kBF16});
  // dx = dy · W and dW = dyᵀ · x on the rounded operands (dy rounds too).
  const std::vector<double> ref_dx =
      ReferenceGemm(RoundedToBF16(dy), RoundedToBF16(w), {}, m, k, n, {});
  const std::vector<double> ref_dw =
      ReferenceGemm(RoundedToBF16(dy), RoundedToBF16(x), {}, n, k, m, {.trans_a = true});
  ExpectAllNear(dx, ref_dx, 1e-5, 1e-5, "bf16 dx");
  ExpectAllNear(dw, ref_dw, 1e-5, 1e-5, "bf16 dW");
}

TEST(MatmulTest, Bf16ComputeRejectsF16AndUnknownComputeDTypes) {
  Tensor a = ToDType(RandomTensor({2, 3}, 51), DType::kF16);
  Tensor b = ToDType(RandomTensor({3, 2}, 52), DType::kF16);
  Tensor out = Tensor::Empty({2, 2}, DType::kF32, MemoryTag::kActivation);
  EXPECT_DEATH(Matmul(a, b, out, {.compute_dtype = DType::kBF16}), "must be f32 or bf16");
  Tensor a32 = RandomTensor({2, 3}, 53), b32 = RandomTensor({3, 2}, 54);
  EXPECT_DEATH(Matmul(a32, b32, out, {.compute_dtype = DType::kF16}),
               "compute_dtype must be f32 or bf16");
}

// The input gradient alone overwrites (beta 0) or accumulates (beta 1) what MatmulBackward adds.
TEST(MatmulTest, BackwardInputOverwritesOrAccumulates) {
  for (bool tb : {false, true}) {
    const Tensor x = RandomTensor({2, 3, 7}, 41);  // leading dims fold into rows
    const Tensor w = RandomTensor(tb ? Shape{5, 7} : Shape{7, 5}, 42);
    const Tensor dy = RandomTensor({2, 3, 5}, 43);
    Tensor reference = Tensor::Zeros({2, 3, 7}, DType::kF32, MemoryTag::kActivation);
    MatmulBackward(x, w, dy, &reference, nullptr, {.trans_b = tb});
    const std::vector<float> r = reference.ToF32Vector();
    Tensor dx = RandomTensor({2, 3, 7}, 44);  // garbage: must be overwritten
    MatmulBackwardInput(dy, w, dx, {.trans_b = tb});
    const std::vector<float> once = dx.ToF32Vector();
    MatmulBackwardInput(dy, w, dx, {.trans_b = tb, .beta = 1.0f});
    const std::vector<float> twice = dx.ToF32Vector();
    for (size_t i = 0; i < r.size(); ++i) {
      EXPECT_NEAR(once[i], r[i], 1e-6 * (1 + std::fabs(r[i]))) << "tb=" << tb << " " << i;
      EXPECT_NEAR(twice[i], 2 * r[i], 2e-6 * (1 + std::fabs(r[i]))) << "tb=" << tb << " " << i;
    }
  }
}

TEST(MatmulTest, BackwardMatchesFiniteDifferences) {
  uint32_t seed = 100;
  for (bool ta : {false, true}) {
    for (bool tb : {false, true}) {
      const int64_t m = 7, n = 5, k = 33;
      const MatmulOptions o{.trans_a = ta, .trans_b = tb, .alpha = 1.5f};
      Tensor a = RandomTensor(ta ? Shape{k, m} : Shape{m, k}, seed++);
      Tensor b = RandomTensor(tb ? Shape{n, k} : Shape{k, n}, seed++);
      Tensor dout = RandomTensor({m, n}, seed++);
      Tensor out = Tensor::Empty({m, n}, DType::kF32, MemoryTag::kActivation);
      Tensor da = Tensor::Zeros(a.shape(), DType::kF32, MemoryTag::kGrad);
      Tensor db = Tensor::Zeros(b.shape(), DType::kF32, MemoryTag::kGrad);
      MatmulBackward(a, b, dout, &da, &db, o);
      auto loss = [&] {
        Matmul(a, b, out, o);
        return Dot(out, dout);
      };
      const std::string what = "ta=" + std::to_string(ta) + " tb=" + std::to_string(tb);
      ExpectGradientMatches(loss, a, da, "da " + what);
      ExpectGradientMatches(loss, b, db, "db " + what);
    }
  }
}

TEST(MatmulTest, BackwardAccumulatesAndFoldsLeadingDims) {
  Tensor a = RandomTensor({2, 3, 4}, 31);
  Tensor b = RandomTensor({6, 4}, 32);
  Tensor dout = RandomTensor({2, 3, 6}, 33);
  Tensor out = Tensor::Empty({2, 3, 6}, DType::kF32, MemoryTag::kActivation);
  Tensor da = Tensor::Zeros(a.shape(), DType::kF32, MemoryTag::kGrad);
  Tensor db = Tensor::Zeros(b.shape(), DType::kF32, MemoryTag::kGrad);
  MatmulBackward(a, b, dout, &da, &db, {.trans_b = true});
  auto loss = [&] {
    Matmul(a, b, out, {.trans_b = true});
    return Dot(out, dout);
  };
  ExpectGradientMatches(loss, a, da, "da (3-D)");
  ExpectGradientMatches(loss, b, db, "db (3-D)");
  // A second backward adds the same gradient again.
  const std::vector<float> once = db.ToF32Vector();
  MatmulBackward(a, b, dout, nullptr, &db, {.trans_b = true});
  const std::vector<float> twice = db.ToF32Vector();
  for (size_t i = 0; i < once.size(); ++i) EXPECT_FLOAT_EQ(twice[i], 2.0f * once[i]);
}

TEST(BiasAddTest, ForwardAndBackward) {
  for (const Shape& shape : {Shape{1, 1}, Shape{7, 33}, Shape{3, 2, 4099}}) {
    Tensor x = RandomTensor(shape, 41);
    Tensor bias = RandomTensor({shape.back()}, 42);
    const std::vector<float> x0 = x.ToF32Vector();
    const std::vector<float> b0 = bias.ToF32Vector();
    BiasAdd(x, bias);
    std::vector<double> expected(x0.size());
    for (size_t i = 0; i < x0.size(); ++i) expected[i] = x0[i] + double{b0[i % b0.size()]};
    ExpectAllNear(x, expected, 0, 1e-7, "BiasAdd " + ShapeToString(shape));

    Tensor y = Tensor::Empty(shape, DType::kF32, MemoryTag::kActivation);
    Tensor dout = RandomTensor(shape, 43);
    Tensor dbias = Tensor::Zeros({shape.back()}, DType::kF32, MemoryTag::kGrad);
    BiasBackward(dout, dbias);
    auto loss = [&] {
      std::copy(x0.begin(), x0.end(), y.data<float>());
      BiasAdd(y, bias);
      return Dot(y, dout);
    };
    ExpectGradientMatches(loss, bias, dbias, "dbias " + ShapeToString(shape));
  }
}

}  // namespace
}  // namespace loom::runtime::kernels
