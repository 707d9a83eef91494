// Wrong shapes or dtypes reaching a kernel abort with a message naming the op, what is wrong and
// every argument's dtype and shape.
#include "runtime/kernels/arg_check.h"

#include <gtest/gtest.h>

#include "runtime/kernels/activation.h"
#include "runtime/kernels/attention.h"
#include "runtime/kernels/matmul.h"
#include "runtime/kernels/norm.h"

namespace loom::runtime::kernels {
namespace {

Tensor F32(const Shape& s) { return Tensor::Zeros(s, DType::kF32, MemoryTag::kActivation); }

TEST(ArgCheckDeathTest, MatmulInnerDimensionMismatch) {
  Tensor a = F32({7, 33}), b = F32({32, 5}), out = F32({7, 5});
  EXPECT_DEATH(Matmul(a, b, out),
               R"(Matmul: inner dimensions differ: op\(a\) is \[7, 33\], op\(b\) is \[32, 5\]; )"
               R"(args: a=f32\[7, 33\] b=f32\[32, 5\] out=f32\[7, 5\])");
}

TEST(ArgCheckDeathTest, MatmulWrongOutputShape) {
  Tensor a = F32({7, 33}), b = F32({33, 5}), out = F32({7, 4});
  EXPECT_DEATH(Matmul(a, b, out), R"(Matmul: out must hold \[7, 5\])");
}

TEST(ArgCheckDeathTest, LayerNormWeightShape) {
  Tensor x = F32({7, 33}), w = F32({34}), b = F32({33}), out = F32({7, 33});
  Tensor mean = F32({7}), rstd = F32({7});
  EXPECT_DEATH(LayerNormForward(x, w, b, 1e-5f, out, mean, rstd),
               R"(LayerNormForward: w must have shape \[33\], got \[34\]; args: x=f32\[7, 33\])");
}

TEST(ArgCheckDeathTest, WrongDTypeNamed) {
  Tensor x = Tensor::Zeros({4}, DType::kI32, MemoryTag::kActivation);
  Tensor out = F32({4});
  EXPECT_DEATH(GeluForward(x, out), R"(GeluForward: x must be f32, got i32; args: x=i32\[4\])");
}

TEST(ArgCheckDeathTest, AttentionHeadsMustDivide) {
  Tensor qkv = F32({1, 4, 30}), out = F32({1, 4, 10}), probs = F32({1, 4, 4, 4});
  EXPECT_DEATH(AttentionForward(qkv, 4, out, probs),
               R"(AttentionForward: qkv's last dimension 30 must be 3 · num_heads · head_dim)");
}

TEST(ArgCheckDeathTest, MissingRequiredArgument) {
  Tensor a = F32({2, 2}), out = F32({2, 2});
  Tensor missing;
  EXPECT_DEATH(Matmul(a, missing, out), R"(Matmul: b is required; args: a=f32\[2, 2\] b=none)");
}

}  // namespace
}  // namespace loom::runtime::kernels
