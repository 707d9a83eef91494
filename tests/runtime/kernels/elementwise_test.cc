// Add / AddInto / Scale are exact; SumOfSquares matches a double reference and is bitwise equal
// for any thread count; 16-bit inputs are summed from their exact values.
#include "runtime/kernels/elementwise.h"

#include <gtest/gtest.h>

#include "runtime/parallel.h"
#include "tests/runtime/emulated_device.h"
#include "tests/runtime/kernels/test_util.h"

namespace loom::runtime::kernels {
namespace {

using testing::RandomTensor;
using testing::ToDType;

TEST(ElementwiseTest, AddAddIntoScale) {
  for (int64_t n : {1, 7, 33, 4099, 100003}) {
    Tensor a = RandomTensor({n}, 1), b = RandomTensor({n}, 2);
    Tensor out = Tensor::Empty({n}, DType::kF32, MemoryTag::kActivation);
    Add(a, b, out);
    const std::vector<float> av = a.ToF32Vector(), bv = b.ToF32Vector();
    for (int64_t i = 0; i < n; ++i) ASSERT_EQ(out.data<float>()[i], av[i] + bv[i]);
    AddInto(a, b);
    for (int64_t i = 0; i < n; ++i) ASSERT_EQ(a.data<float>()[i], av[i] + bv[i]);
    Scale(b, 0.25f);
    for (int64_t i = 0; i < n; ++i) ASSERT_EQ(b.data<float>()[i], bv[i] * 0.25f);
  }
}

TEST(ElementwiseTest, SumOfSquaresMatchesReferenceForAnyThreadCount) {
  for (int64_t n : {0, 1, 7, 4099, 1 << 20}) {
    Tensor x = RandomTensor({n}, 3);
    double expected = 0;
    for (float v : x.ToF32Vector()) expected += double{v} * v;
    SetNumThreads(1);
    const double one = SumOfSquares(x);
    SetNumThreads(2);
    const double two = SumOfSquares(x);
    SetNumThreads(5);
    const double five = SumOfSquares(x);
    EXPECT_NEAR(one, expected, 1e-9 * std::max(1.0, expected)) << n;
    EXPECT_EQ(one, two) << n;
    EXPECT_EQ(one, five) << n;
  }
}

TEST(ElementwiseTest, SumOfSquaresOfSixteenBitValues) {
  for (DType dt : {DType::kBF16, DType::kF16}) {
    Tensor x32 = RandomTensor({4099}, 4);
    Tensor x = Tensor::Empty({4099}, dt, MemoryTag::kGrad);
    ConvertBuffer(x32.raw_data(), DType::kF32, x.raw_data(), dt, x.numel());
    double expected = 0;
    for (float v : x.ToF32Vector()) expected += double{v} * v;  // exact decoded values
    EXPECT_NEAR(SumOfSquares(x), expected, 1e-9 * expected) << DTypeName(dt);
  }
}

// Ids in range pass; the first one outside is named with its position and value (a negative id
// included), and nothing is checked on a tensor of another dtype.
TEST(ElementwiseDeathTest, CheckIndicesNamesTheFirstIdOutsideItsRange) {
  const Tensor good = Tensor::FromVector<int32_t>({4}, {0, 3, 1, 2}, MemoryTag::kActivation);
  CheckIndices(good, 4, "ids");
  const Tensor bad = Tensor::FromVector<int32_t>({2, 2}, {0, 3, -1, 4}, MemoryTag::kActivation);
  EXPECT_DEATH(CheckIndices(bad, 4, "token ids"), R"(token ids\[2\] = -1 is outside \[0, 4\))");
  EXPECT_DEATH(CheckIndices(RandomTensor({4}, 1), 4, "ids"), "CheckIndices");
}

// SumsOfSquares gives each tensor's SumOfSquares, bitwise, on the host and on an (emulated)
// device, where it reads them back together; tensors on both sides are refused.
TEST(ElementwiseTest, SumsOfSquaresAreEachTensorsSumOfSquares) {
  const std::vector<Tensor> xs = {RandomTensor({3}, 1), RandomTensor({0}, 2),
                                  RandomTensor({5000}, 3),
                                  ToDType(RandomTensor({77}, 4), DType::kBF16)};
  std::vector<double> each;
  for (const Tensor& x : xs) each.push_back(SumOfSquares(x));
  EXPECT_EQ(SumsOfSquares(xs), each);
  EXPECT_TRUE(SumsOfSquares({}).empty());
  runtime::testing::EmulatedDevice device;
  std::vector<Tensor> on_device;
  for (const Tensor& x : xs) on_device.push_back(x.Clone(&device.allocator()));
  EXPECT_EQ(SumsOfSquares(on_device), each);
  const std::vector<Tensor> mixed = {xs[0], on_device[2]};
  EXPECT_DEATH(SumsOfSquares(mixed), "all on the host or all on one device");
}

}  // namespace
}  // namespace loom::runtime::kernels
