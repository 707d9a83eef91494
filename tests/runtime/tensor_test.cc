// Tensor: shapes, typed access, views along dim 0, reshape, clone, and shared storage lifetime.
#include "runtime/tensor.h"

#include <gtest/gtest.h>

#include <cstdlib>
#include <cstring>
#include <thread>
#include <vector>

#include "runtime/kernels/activation.h"
#include "runtime/kernels/cuda_twins.h"
#include "runtime/kernels/moe.h"

namespace loom::runtime {
namespace {

TEST(TensorTest, ShapeAndSize) {
  Allocator alloc;
  Tensor t = Tensor::Zeros({3, 5, 7}, DType::kBF16, MemoryTag::kActivation, &alloc);
  EXPECT_TRUE(t.defined());
  EXPECT_EQ(t.rank(), 3);
  EXPECT_EQ(t.dim(0), 3);
  EXPECT_EQ(t.dim(-1), 7);
  EXPECT_EQ(t.numel(), 105);
  EXPECT_EQ(t.nbytes(), 210u);
  EXPECT_EQ(t.DebugString(), "bf16[3, 5, 7]");
  EXPECT_EQ(reinterpret_cast<uintptr_t>(t.raw_data()) % kAllocationAlignment, 0u);
  for (float v : t.ToF32Vector()) EXPECT_EQ(v, 0.0f);
  EXPECT_FALSE(Tensor().defined());
}

TEST(TensorTest, SliceIsAViewAlongDimZero) {
  Tensor t = Tensor::FromVector<float>({4, 3}, {0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11},
                                       MemoryTag::kActivation);
  Tensor rows = t.Slice(1, 3);
  EXPECT_EQ(rows.shape(), (Shape{2, 3}));
  EXPECT_EQ(rows.ToF32Vector(), (std::vector<float>{3, 4, 5, 6, 7, 8}));
  rows.data<float>()[0] = -1.0f;  // writes through to the parent
  EXPECT_EQ(t.data<float>()[3], -1.0f);
  EXPECT_EQ(t.Slice(4, 4).numel(), 0);
}

TEST(TensorTest, ReshapeSharesStorageAndInfers) {
  Tensor t = Tensor::Zeros({2, 6}, DType::kF32, MemoryTag::kActivation);
  Tensor r = t.Reshape({3, -1});
  EXPECT_EQ(r.shape(), (Shape{3, 4}));
  r.data<float>()[11] = 5.0f;
  EXPECT_EQ(t.data<float>()[11], 5.0f);
  Tensor c = t.Clone();
  c.data<float>()[11] = 6.0f;
  EXPECT_EQ(t.data<float>()[11], 5.0f);
}

TEST(TensorTest, FillConvertsToDType) {
  Tensor h = Tensor::Empty({5}, DType::kF16, MemoryTag::kActivation);
  h.Fill(1.5f);
  for (float v : h.ToF32Vector()) EXPECT_EQ(v, 1.5f);
  Tensor i = Tensor::Empty({3}, DType::kI64, MemoryTag::kActivation);
  i.Fill(-4.0f);
  EXPECT_EQ(i.data<int64_t>()[2], -4);
}

// Host memory that says it is a CUDA device's: device tensors without a GPU.
MemorySource FakeDevice() {
  MemorySource source = MemorySource::Host();
  source.name = "fake device";
  source.device = Device::kCuda;
  return source;
}

// A tensor lives where its allocator's memory does. Device memory is faked here with host memory
// behind a source that says kCuda (the CUDA backend's DeviceAllocator is the real one): the tensor
// and its views say cuda, host accessors and the CPU kernels refuse it by name, device_data()
// gives its address, and the accounting counts it as any other.
TEST(TensorDeathTest, DeviceTensorsAreRefusedByHostCode) {
  Allocator fake(0, FakeDevice());
  const Tensor t = Tensor::Empty({4, 8}, DType::kF32, MemoryTag::kActivation, &fake);
  EXPECT_EQ(t.device(), Device::kCuda);
  EXPECT_EQ(t.Slice(1, 3).device(), Device::kCuda);
  EXPECT_EQ(t.Reshape({32}).device(), Device::kCuda);
  EXPECT_NE(t.DebugString().find("@cuda"), std::string::npos) << t.DebugString();
  EXPECT_NE(t.device_data(), nullptr);
  EXPECT_EQ(fake.Stats(MemoryTag::kActivation).current_bytes, 4 * 8 * 4);
  EXPECT_DEATH((void)t.data<float>(), "device memory is not addressable from the host");
  EXPECT_DEATH(Tensor::Zeros({4}, DType::kF32, MemoryTag::kActivation, &fake),
               "device memory is not addressable from the host");
  Tensor out = Tensor::Empty({4, 8}, DType::kF32, MemoryTag::kActivation);
  EXPECT_DEATH(kernels::GeluForward(t, out), "x is on cuda but out is on cpu");
  Tensor dev_out = Tensor::Empty({4, 8}, DType::kF32, MemoryTag::kActivation, &fake);
  EXPECT_DEATH(kernels::GeluForward(t, dev_out), "GeluForward: its CUDA twin is not registered");
  Tensor scores = Tensor::Empty({4, 8}, DType::kF32, MemoryTag::kActivation, &fake);
  EXPECT_DEATH(kernels::RouterScores(t, kernels::RouterScore::kSoftmax, scores),
               "logits is on cuda but the kernel entry points run on the CPU only");
  const Tensor host = Tensor::Empty({4}, DType::kF32, MemoryTag::kActivation);
  EXPECT_EQ(host.device(), Device::kCpu);
  EXPECT_DEATH((void)host.device_data(), "device_data\\(\\) of a host tensor");
}

// An entry point runs the registered CUDA twin for device tensors (a fake twin here, on the fake
// device's host memory), and the CPU kernel for host tensors.
TEST(TensorTest, EntryPointsDispatchDeviceTensorsToTheirCudaTwin) {
  Allocator fake(0, FakeDevice());
  static int calls = 0;
  kernels::CudaTwins().gelu_forward = [](const Tensor& x, Tensor& out) {
    ++calls;
    static_cast<float*>(out.device_data())[0] = static_cast<const float*>(x.device_data())[0];
  };
  const Tensor x = Tensor::Zeros({2}, DType::kF32, MemoryTag::kActivation);
  Tensor y = Tensor::Empty({2}, DType::kF32, MemoryTag::kActivation);
  kernels::GeluForward(x, y);  // host: the CPU kernel
  EXPECT_EQ(calls, 0);
  const Tensor dx = Tensor::Empty({2}, DType::kF32, MemoryTag::kActivation, &fake);
  Tensor dy = Tensor::Empty({2}, DType::kF32, MemoryTag::kActivation, &fake);
  kernels::GeluForward(dx, dy);
  EXPECT_EQ(calls, 1);
  kernels::CudaTwins().gelu_forward = nullptr;
}

// A fake device whose memory the host cannot be assumed to address: copies and fills go through
// the source's own functions (host memory underneath, counted here), as cudaMemcpy / cudaMemset
// do for the CUDA device.
int fake_copies = 0, fake_sets = 0;
MemorySource FakeDeviceWithCopies() {
  MemorySource source = FakeDevice();
  source.copy = [](void* dst, const void* src, size_t bytes) {
    ++fake_copies;
    std::memcpy(dst, src, bytes);
  };
  source.set = [](void* p, int byte, size_t bytes) {
    ++fake_sets;
    std::memset(p, byte, bytes);
  };
  return source;
}

// Zeros, Fill, Clone, CopyFrom and ToF32Vector work on device tensors through the source's copy
// and set (never the host's memcpy on device memory), in either direction.
TEST(TensorTest, DeviceTensorsAreFilledAndCopiedThroughTheirSource) {
  Allocator device(0, FakeDeviceWithCopies());
  fake_copies = fake_sets = 0;
  Tensor z = Tensor::Zeros({5}, DType::kF32, MemoryTag::kActivation, &device);
  EXPECT_EQ(fake_sets, 1);
  EXPECT_EQ(z.ToF32Vector(), std::vector<float>(5, 0.0f));
  EXPECT_EQ(fake_copies, 1);  // to the host
  Tensor b = Tensor::Empty({3}, DType::kBF16, MemoryTag::kActivation, &device);
  b.Fill(1.5f);  // built on the host, copied over
  EXPECT_EQ(fake_copies, 2);
  EXPECT_EQ(b.ToF32Vector(), std::vector<float>(3, 1.5f));
  const Tensor host = Tensor::FromVector<float>({4}, {1, 2, 3, 4}, MemoryTag::kActivation);
  Tensor d = host.Clone(&device);  // host to device
  EXPECT_EQ(d.device(), Device::kCuda);
  Tensor back = d.Slice(1, 3).Clone(&Allocator::Default());  // device to host, from a view
  EXPECT_EQ(back.device(), Device::kCpu);
  EXPECT_EQ(back.ToF32Vector(), (std::vector<float>{2, 3}));
  Tensor d2 = Tensor::Empty({4}, DType::kF32, MemoryTag::kActivation, &device);
  d2.CopyFrom(d);  // device to device
  EXPECT_EQ(d2.ToF32Vector(), (std::vector<float>{1, 2, 3, 4}));
  EXPECT_EQ(fake_copies, 7);
  EXPECT_DEATH(d2.CopyFrom(back), "Tensor::CopyFrom: f32\\[2\\] into f32\\[4\\]@cuda");
}

// Tensors allocated without naming an allocator go to the innermost AllocatorScope's (the
// layers' activations onto a device), and back to the default once the scope ends.
TEST(TensorTest, AllocatorScopeDecidesWhereUnnamedTensorsGo) {
  Allocator outer, inner;
  EXPECT_EQ(&Allocator::Current(), &Allocator::Default());
  {
    AllocatorScope a(&outer);
    Tensor x = Tensor::Empty({8}, DType::kF32, MemoryTag::kActivation);
    EXPECT_EQ(outer.Stats(MemoryTag::kActivation).current_bytes, 32);
    {
      AllocatorScope b(&inner);
      Tensor y = Tensor::Zeros({4}, DType::kF32, MemoryTag::kActivation);
      EXPECT_EQ(inner.Stats(MemoryTag::kActivation).current_bytes, 16);
      Tensor named = Tensor::Empty({4}, DType::kF32, MemoryTag::kActivation, &outer);
      EXPECT_EQ(outer.Stats(MemoryTag::kActivation).current_bytes, 48);
    }
    EXPECT_EQ(&Allocator::Current(), &outer);
    std::thread other([&] { EXPECT_EQ(&Allocator::Current(), &Allocator::Default()); });
    other.join();
  }
  EXPECT_EQ(&Allocator::Current(), &Allocator::Default());
}

TEST(TensorTest, StorageLivesWhileAnyViewDoes) {
  Allocator alloc;
  Tensor view;
  {
    Tensor t = Tensor::Empty({1024}, DType::kF32, MemoryTag::kParam, &alloc);
    view = t.Slice(10, 20);
  }
  EXPECT_EQ(alloc.Stats(MemoryTag::kParam).current_bytes, 4096);
  view = Tensor();
  EXPECT_EQ(alloc.Stats(MemoryTag::kParam).current_bytes, 0);
}

TEST(TensorDeathTest, WrongTypedAccessNamesDTypeAndShape) {
  Tensor t = Tensor::Zeros({2, 3}, DType::kF32, MemoryTag::kActivation);
  EXPECT_DEATH(t.data<int32_t>(), R"(Tensor::data<i32>\(\) on a f32\[2, 3\])");
}

TEST(TensorDeathTest, BadViewsAbortWithShapes) {
  Tensor t = Tensor::Zeros({2, 3}, DType::kF32, MemoryTag::kActivation);
  EXPECT_DEATH(t.Slice(1, 3), R"(Slice \[1, 3\) out of range for f32\[2, 3\])");
  EXPECT_DEATH(t.Reshape({4, 2}), R"(Reshape: f32\[2, 3\] to \[4, 2\])");
}

}  // namespace
}  // namespace loom::runtime
