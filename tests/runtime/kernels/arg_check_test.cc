// Wrong shapes or dtypes reaching a kernel abort with a message naming the op, what is wrong and
// every argument's dtype and shape; the profiling hooks bracket each device entry point once.
#include "runtime/kernels/arg_check.h"

#include <gtest/gtest.h>

#include <string>
#include <string_view>
#include <vector>

#include "runtime/kernels/activation.h"
#include "runtime/kernels/attention.h"
#include "runtime/kernels/matmul.h"
#include "runtime/kernels/norm.h"
#include "tests/runtime/emulated_device.h"

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

// The profiling hooks (LOOM_CUDA_PROFILE=1 fills them on a GPU): an entry point that runs a twin
// is bracketed once, under its own name, with the twin's own entry points inside it not counted
// again; host calls are not timed.
std::vector<std::string>* timed_ops = nullptr;

TEST(ArgCheckProfiling, EachTopLevelEntryPointOnTheDeviceIsTimedOnce) {
  testing::EmulatedDevice device;  // restores the table when it goes
  std::vector<std::string> ops;
  timed_ops = &ops;
  CudaTwinTable& twins = CudaTwins();
  twins.op_begin = [](std::string_view op) -> void* {
    timed_ops->emplace_back(op);
    return timed_ops;
  };
  twins.op_end = [](void* token) {
    static_cast<std::vector<std::string>*>(token)->push_back("end");
  };
  // Add's twin calls another entry point on the device: inside a timed one, not timed again.
  twins.add = [](const Tensor& a, const Tensor& b, Tensor& out) {
    Tensor copy = out;
    Scale(copy, 1.0f);
    testing::emulated::Twin<&Add>::Run(a, b, out);
  };
  const Tensor a = F32({4, 3}), b = F32({3, 2});
  Tensor out = F32({4, 2});
  Matmul(a, b, out);  // on the host: not timed
  EXPECT_TRUE(ops.empty());
  AllocatorScope on_device(&device.allocator());
  const Tensor da = a.Clone(), db = b.Clone();
  Tensor dout = out.Clone(), sum = out.Clone();
  Matmul(da, db, dout);
  Add(dout, dout, sum);
  EXPECT_EQ(ops, (std::vector<std::string>{"Matmul", "end", "Add", "end"}));
  timed_ops = nullptr;
}

}  // namespace
}  // namespace loom::runtime::kernels
