// Embedding: forward copies the indexed rows exactly; backward scatter-adds (repeated ids sum)
// against a double-precision reference and against central finite differences.
#include "runtime/kernels/embedding.h"

#include <gtest/gtest.h>

#include "tests/runtime/kernels/test_util.h"

namespace loom::runtime::kernels {
namespace {

using testing::Dot;
using testing::ExpectAllNear;
using testing::ExpectGradientMatches;
using testing::RandomIds;
using testing::RandomTensor;

TEST(EmbeddingTest, ForwardAndBackward) {
  struct Case {
    Shape ids;
    int64_t vocab, c;
  };
  for (const Case& k :
       {Case{{1}, 1, 1}, Case{{7}, 3, 33}, Case{{2, 33}, 5, 7}, Case{{4099}, 50, 3}}) {
    Tensor ids = RandomIds(k.ids, static_cast<int32_t>(k.vocab), 1);  // many repeats
    Tensor table = RandomTensor({k.vocab, k.c}, 2);
    Shape out_shape = k.ids;
    out_shape.push_back(k.c);
    Tensor out = Tensor::Empty(out_shape, DType::kF32, MemoryTag::kActivation);
    EmbeddingForward(ids, table, out);
    const int32_t* id = ids.data<int32_t>();
    const std::vector<float> o = out.ToF32Vector(), tv = table.ToF32Vector();
    for (int64_t i = 0; i < ids.numel(); ++i) {
      for (int64_t j = 0; j < k.c; ++j) ASSERT_EQ(o[i * k.c + j], tv[id[i] * k.c + j]);
    }

    Tensor dout = RandomTensor(out_shape, 3);
    Tensor dtable = Tensor::Zeros({k.vocab, k.c}, DType::kF32, MemoryTag::kGrad);
    EmbeddingBackward(dout, ids, dtable);
    std::vector<double> expected(static_cast<size_t>(k.vocab * k.c), 0.0);
    const std::vector<float> d = dout.ToF32Vector();
    for (int64_t i = 0; i < ids.numel(); ++i) {
      for (int64_t j = 0; j < k.c; ++j) expected[id[i] * k.c + j] += d[i * k.c + j];
    }
    ExpectAllNear(dtable, expected, 1e-5, 1e-5, "dtable " + ShapeToString(k.ids));
    ExpectGradientMatches(
        [&] {
          EmbeddingForward(ids, table, out);
          return Dot(out, dout);
        },
        table, dtable, "dtable (finite differences) " + ShapeToString(k.ids));
  }
}

TEST(EmbeddingDeathTest, IdOutOfRangeNamesPosition) {
  Tensor ids = Tensor::FromVector<int32_t>({3}, {0, 2, 3}, MemoryTag::kActivation);
  Tensor table = RandomTensor({3, 4}, 4);
  Tensor out = Tensor::Empty({3, 4}, DType::kF32, MemoryTag::kActivation);
  EXPECT_DEATH(EmbeddingForward(ids, table, out),
               R"(EmbeddingForward: ids\[2\] = 3 is outside the table's 3 rows)");
}

}  // namespace
}  // namespace loom::runtime::kernels
