// Every CUDA kernel against its CPU twin (runtime/kernels/cuda/cuda_kernels.h), at sizes that do
// not fill whole blocks and at one that needs the grid-stride loop. ctest label `gpu`; without a
// CUDA device (or driver) every test skips, saying so.
//
// Tolerances: Add is exact; GELU differs in tanh only (the CPU's FastTanh is within 8 ulp of
// tanh for |x| >= 1e-3, CUDA's tanhf within 2 ulp; both sides compute without contracted
// multiply-adds), so forward and backward agree within 1e-6 absolute + 1e-5 relative.
#include "runtime/kernels/cuda/cuda_kernels.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "runtime/kernels/activation.h"
#include "runtime/kernels/adamw.h"
#include "runtime/kernels/attention.h"
#include "runtime/kernels/bias_add.h"
#include "runtime/kernels/cross_entropy.h"
#include "runtime/kernels/cuda/device.h"
#include "runtime/kernels/cuda/launch.h"
#include "runtime/kernels/cuda/multi_tensor.h"
#include "runtime/kernels/cuda/stream.h"
#include "runtime/kernels/elementwise.h"
#include "runtime/kernels/embedding.h"
#include "runtime/kernels/fp8.h"
#include "runtime/kernels/matmul.h"
#include "runtime/kernels/moe.h"
#include "runtime/kernels/norm.h"
#include "runtime/rng.h"
#include "runtime/tensor.h"

namespace loom::runtime::kernels::cuda {
namespace {

class CudaKernels : public ::testing::Test {
 protected:
  void SetUp() override {
    if (DeviceCount() == 0) GTEST_SKIP() << "no CUDA device: the CUDA kernels are not run";
    std::printf("CUDA device: %s\n", DeviceDescription().c_str());
  }
  static std::vector<int64_t> Sizes() { return {1, 1000, kMaxBlocks * kBlock * 2 + 7}; }
  static Tensor Random(int64_t n, uint64_t seed, float scale) {
    Tensor t = Tensor::Empty({n}, DType::kF32, MemoryTag::kActivation);
    FillNormal(t, seed, "cuda_kernels_test", 0, 0.0f, scale);
    return t;
  }
  // A device copy of `host`; an uninitialised device tensor of n elements.
  static Tensor Upload(const Tensor& host) {
    absl::StatusOr<Tensor> d = ToDevice(host);
    EXPECT_TRUE(d.ok()) << d.status();
    return d.ok() ? *d : Tensor();
  }
  // `t` (f32, host) in `dtype`: itself, or rounded to bf16.
  static Tensor As(const Tensor& t, DType dtype) {
    if (dtype != DType::kBF16) return t;
    Tensor narrow = Tensor::Empty(t.shape(), DType::kBF16, MemoryTag::kActivation);
    ConvertBuffer(t.raw_data(), DType::kF32, narrow.raw_data(), DType::kBF16, t.numel());
    return narrow;
  }
  static Tensor OnDevice(int64_t n) {
    return Tensor::Empty({n}, DType::kF32, MemoryTag::kActivation, &DeviceAllocator());
  }
  static std::vector<float> Download(const Tensor& d) {
    const absl::Status launched = LastError("kernel launch");
    EXPECT_TRUE(launched.ok()) << launched;
    absl::StatusOr<Tensor> h = ToHost(d);
    EXPECT_TRUE(h.ok()) << h.status();
    return h.ok() ? h->ToF32Vector() : std::vector<float>();
  }
  static const float* In(const Tensor& t) { return static_cast<const float*>(t.device_data()); }
  static float* Out(Tensor& t) { return static_cast<float*>(t.device_data()); }
  // Every element within `abs` + `rel`·|want| (the GELU tolerance by default).
  static void ExpectClose(const std::vector<float>& got, const Tensor& want,
                          const std::string& what, float abs = 1e-6f, float rel = 1e-5f) {
    const float* w = want.data<float>();
    int64_t bad = 0;
    for (size_t i = 0; i < got.size(); ++i) {
      if (!(std::fabs(got[i] - w[i]) <= abs + rel * std::fabs(w[i]))) {
        if (bad++ < 3) ADD_FAILURE() << what << "[" << i << "]: " << got[i] << " vs " << w[i];
      }
    }
    EXPECT_EQ(bad, 0) << what << ": " << bad << " of " << got.size() << " elements differ";
  }
};

TEST_F(CudaKernels, AddIsExact) {
  for (int64_t n : Sizes()) {
    const Tensor a = Random(n, 1, 1.0f), b = Random(n, 2, 1.0f);
    Tensor want = Tensor::Empty({n}, DType::kF32, MemoryTag::kActivation);
    for (int64_t i = 0; i < n; ++i) want.data<float>()[i] = a.data<float>()[i] + b.data<float>()[i];
    Tensor da = Upload(a), db = Upload(b), out = OnDevice(n);
    Add(In(da), In(db), Out(out), n, nullptr);
    EXPECT_EQ(Download(out), want.ToF32Vector()) << "n " << n;
  }
}

TEST_F(CudaKernels, GeluForwardAndBackwardMatchTheCpu) {
  for (int64_t n : Sizes()) {
    const Tensor x = Random(n, 3, 3.0f), dout = Random(n, 4, 1.0f), dx0 = Random(n, 5, 1.0f);
    Tensor y = Tensor::Empty({n}, DType::kF32, MemoryTag::kActivation);
    kernels::GeluForward(x, y);
    Tensor dx = dx0.Clone();
    kernels::GeluBackward(dout, x, dx);  // accumulates into dx0's values
    Tensor dev_x = Upload(x), dev_dout = Upload(dout), dev_dx = Upload(dx0), dev_y = OnDevice(n);
    GeluForward(In(dev_x), Out(dev_y), n, nullptr);
    GeluBackward(In(dev_dout), In(dev_x), Out(dev_dx), n, nullptr);
    ExpectClose(Download(dev_y), y, "gelu");
    ExpectClose(Download(dev_dx), dx, "gelu backward");
    // x in bf16, read without widening first.
    const Tensor x16 = As(x, DType::kBF16);
    Tensor dx16 = dx0.Clone();
    kernels::GeluBackward(dout, x16, dx16);
    Tensor dev_x16 = Upload(x16), dev_dx16 = Upload(dx0);
    GeluBackwardBf16(In(dev_dout), static_cast<const uint16_t*>(dev_x16.device_data()),
                     Out(dev_dx16), n, nullptr);
    ExpectClose(Download(dev_dx16), dx16, "gelu backward, bf16 x");
    // Without accumulate: dx's contents ignored.
    Tensor over = Tensor::Zeros({n}, DType::kF32, MemoryTag::kActivation);
    kernels::GeluBackward(dout, x, over);
    Tensor dev_over = Upload(dx0);
    GeluBackward(In(dev_dout), In(dev_x), Out(dev_over), n, nullptr, /*accumulate=*/false);
    ExpectClose(Download(dev_over), over, "gelu backward, overwriting");
  }
}

// The device allocator: cudaMalloc'd memory under the same accounting and cache as the host's
// (a freed block comes back for the same size; the tags count only what is in use).
TEST_F(CudaKernels, DeviceAllocatorCachesAndCounts) {
  runtime::Allocator& a = DeviceAllocator();
  const int64_t before = a.Stats(MemoryTag::kActivation).current_bytes;
  constexpr size_t kBytes = 1 << 20;
  void* p = a.Allocate(kBytes, MemoryTag::kActivation);
  ASSERT_NE(p, nullptr);
  EXPECT_EQ(a.Stats(MemoryTag::kActivation).current_bytes, before + static_cast<int64_t>(kBytes));
  a.Free(p, kBytes, MemoryTag::kActivation);
  EXPECT_EQ(a.Stats(MemoryTag::kActivation).current_bytes, before);
  void* q = a.Allocate(kBytes, MemoryTag::kParam);
  EXPECT_EQ(q, p);
  a.Free(q, kBytes, MemoryTag::kParam);
  EXPECT_TRUE(LastError("device allocator").ok());
}

// Tensors on the device: a host tensor copied there and back is the same bytes; the device copy
// says cuda and comes from the device allocator; the GELU entry point dispatches to the CUDA twin.
TEST_F(CudaKernels, TensorsRoundTripThroughTheDevice) {
  const Tensor host = Random(1000, 6, 1.0f);
  absl::StatusOr<Tensor> dev = ToDevice(host);
  ASSERT_TRUE(dev.ok()) << dev.status();
  EXPECT_EQ(dev->device(), Device::kCuda);
  EXPECT_GE(DeviceAllocator().Stats(MemoryTag::kActivation).current_bytes, 4000);
  Tensor gelu = Tensor::Empty({1000}, DType::kF32, MemoryTag::kActivation, &DeviceAllocator());
  RegisterKernels();
  kernels::GeluForward(*dev, gelu);  // the entry point, dispatching to the CUDA twin
  absl::StatusOr<Tensor> back = ToHost(*dev);
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_EQ(back->ToF32Vector(), host.ToF32Vector());
  absl::StatusOr<Tensor> y = ToHost(gelu);
  ASSERT_TRUE(y.ok()) << y.status();
  Tensor want = Tensor::Empty({1000}, DType::kF32, MemoryTag::kActivation);
  kernels::GeluForward(host, want);
  ExpectClose(y->ToF32Vector(), want, "gelu on device tensors");
}

// AdamW through the entry point on device tensors: the same bits as the CPU kernel (shared
// formula, no contracted multiply-adds, IEEE division and square root), bf16 copy included.
TEST_F(CudaKernels, AdamWIsBitwiseTheCpuKernel) {
  RegisterKernels();
  const int64_t n = kMaxBlocks * kBlock + 5;
  Tensor p = Random(n, 7, 0.02f), g = Random(n, 8, 1e-3f), m = Random(n, 9, 1e-4f);
  Tensor v = Random(n, 10, 1e-4f);
  for (int64_t i = 0; i < n; ++i) v.data<float>()[i] *= v.data<float>()[i];  // v >= 0
  const AdamWConfig config{
      .lr = 6e-4f, .beta1 = 0.9f, .beta2 = 0.95f, .eps = 1e-8f, .weight_decay = 0.1f};
  absl::StatusOr<Tensor> dp = ToDevice(p), dg = ToDevice(g), dm = ToDevice(m), dv = ToDevice(v);
  ASSERT_TRUE(dp.ok() && dg.ok() && dm.ok() && dv.ok());
  Tensor copy = Tensor::Empty({n}, DType::kBF16, MemoryTag::kParam);
  Tensor dcopy = Tensor::Empty({n}, DType::kBF16, MemoryTag::kParam, &DeviceAllocator());
  kernels::AdamWUpdate(p, g, m, v, config, /*step=*/3, &copy);
  kernels::AdamWUpdate(*dp, *dg, *dm, *dv, config, /*step=*/3, &dcopy);
  for (const auto& [want, got] : {std::pair<Tensor*, Tensor*>{&p, &*dp}, {&m, &*dm}, {&v, &*dv}}) {
    absl::StatusOr<Tensor> host = ToHost(*got);
    ASSERT_TRUE(host.ok()) << host.status();
    EXPECT_EQ(host->ToF32Vector(), want->ToF32Vector());
  }
  absl::StatusOr<Tensor> host_copy = ToHost(dcopy);
  ASSERT_TRUE(host_copy.ok()) << host_copy.status();
  EXPECT_EQ(0, std::memcmp(host_copy->raw_data(), copy.raw_data(), copy.nbytes()));
}

// The multi-tensor AdamW: 41 tensors (more than one launch's table holds), sizes from empty to
// several chunks (a tensor split between launches), with and without weight decay, bitwise the
// CPU's per-tensor update of the same values.
TEST_F(CudaKernels, AdamWManyIsBitwiseTheCpuKernel) {
  RegisterKernels();
  const AdamWConfig config{
      .lr = 6e-4f, .beta1 = 0.9f, .beta2 = 0.95f, .eps = 1e-8f, .weight_decay = 0.1f};
  std::vector<AdamWTensors> host, device;
  for (int i = 0; i < 41; ++i) {
    const int64_t n = i == 3 ? 0 : i == 5 ? kLaunchChunk * 3 + 17 : 1 + i * 997;
    const uint64_t seed = 100 + 4 * static_cast<uint64_t>(i);
    Tensor p = Random(n, seed, 0.02f), g = Random(n, seed + 1, 1e-3f);
    Tensor m = Random(n, seed + 2, 1e-4f), v = Random(n, seed + 3, 1e-4f);
    for (int64_t j = 0; j < n; ++j) v.data<float>()[j] *= v.data<float>()[j];  // v >= 0
    device.push_back({Upload(p), Upload(g), Upload(m), Upload(v), i % 3 != 0});
    host.push_back({p, g, m, v, i % 3 != 0});
  }
  for (AdamWTensors& t : host) {
    AdamWConfig c = config;
    if (!t.decay) c.weight_decay = 0.0f;
    kernels::AdamWUpdate(t.master, t.grad, t.m, t.v, c, /*step=*/3);
  }
  kernels::AdamWUpdateMany(device, config, /*step=*/3);
  for (size_t i = 0; i < host.size(); ++i) {
    EXPECT_EQ(Download(device[i].master), host[i].master.ToF32Vector()) << "tensor " << i;
    EXPECT_EQ(Download(device[i].m), host[i].m.ToF32Vector()) << "tensor " << i;
    EXPECT_EQ(Download(device[i].v), host[i].v.ToF32Vector()) << "tensor " << i;
  }
}

// SGD through the entry point on device tensors: the shared formula, so bitwise the CPU kernel, on
// the first step (buffer = d) and a later one (momentum).
TEST_F(CudaKernels, SgdIsBitwiseTheCpuKernel) {
  RegisterKernels();
  const int64_t n = kMaxBlocks * kBlock + 5;
  Tensor p = Random(n, 48, 0.02f), buffer = Random(n, 50, 1e-3f);
  const Tensor g = Random(n, 49, 1e-3f);
  Tensor dp = Upload(p), dbuffer = Upload(buffer);
  const Tensor dg = Upload(g);
  for (bool first : {true, false}) {
    const SgdStep step{.lr = 0.1f, .momentum = 0.9f, .weight_decay = 0.01f, .first = first};
    kernels::SgdUpdate(p, g, buffer, step);
    kernels::SgdUpdate(dp, dg, dbuffer, step);
    ExpectClose(Download(dp), p, absl::StrCat("sgd param, first ", first), 0.0f, 0.0f);
    ExpectClose(Download(dbuffer), buffer, absl::StrCat("sgd buffer, first ", first), 0.0f, 0.0f);
  }
}

// Matmul through the entry point on device tensors (the cuBLASLt twin) against the CPU: every
// transposition, odd shapes, alpha and beta, f32 and bf16 operands (f32 out). Both accumulate in
// f32 in different orders: within 1e-4 absolute + 1e-4 relative on entries of size ~sqrt(k).
TEST_F(CudaKernels, MatmulMatchesTheCpu) {
  RegisterKernels();
  const int64_t m = 37, n = 53, k = 29;
  for (DType dtype : {DType::kF32, DType::kBF16}) {
    for (bool trans_a : {false, true}) {
      for (bool trans_b : {false, true}) {
        Tensor a = Random(m * k, 11, 1.0f).Reshape(trans_a ? Shape{k, m} : Shape{m, k});
        Tensor b = Random(k * n, 12, 1.0f).Reshape(trans_b ? Shape{n, k} : Shape{k, n});
        a = As(a, dtype);
        b = As(b, dtype);
        Tensor want = Random(m * n, 13, 1.0f).Reshape({m, n});
        const Tensor out0 = want.Clone();
        const MatmulOptions o{.trans_a = trans_a, .trans_b = trans_b, .alpha = 0.5f, .beta = 1.0f};
        kernels::Matmul(a, b, want, o);
        Tensor da = Upload(a), db = Upload(b), dout = Upload(out0);
        kernels::Matmul(da, db, dout, o);
        ExpectClose(Download(dout), want,
                    absl::StrCat(DTypeName(dtype), " trans_a ", trans_a, " trans_b ", trans_b),
                    1e-4f, 1e-4f);
        // With a bias: cuBLASLt's epilogue (or the kernel after it), as the CPU's BiasAdd.
        const Tensor bias = Random(n, 14, 1.0f);
        const MatmulOptions ob{.trans_a = trans_a, .trans_b = trans_b, .bias = &bias};
        const Tensor d_bias = Upload(bias);
        MatmulOptions d_ob = ob;
        d_ob.bias = &d_bias;
        Tensor with_bias = Tensor::Empty({m, n}, DType::kF32, MemoryTag::kActivation);
        Tensor d_with_bias = OnDevice(m * n).Reshape({m, n});
        kernels::Matmul(a, b, with_bias, ob);
        kernels::Matmul(da, db, d_with_bias, d_ob);
        ExpectClose(
            Download(d_with_bias), with_bias,
            absl::StrCat("bias ", DTypeName(dtype), " trans_a ", trans_a, " trans_b ", trans_b),
            1e-4f, 1e-4f);
      }
    }
  }
}

// LayerNorm through the entry points on device tensors against the CPU: rows of 33 and 768
// (columns fewer than, and several times, the block), 1, 7 and 300 rows; the backward adds into
// random dx, dw, db. The block sums run in another order than the CPU's lane sums: within
// 1e-5 absolute + 1e-4 relative.
TEST_F(CudaKernels, LayerNormMatchesTheCpu) {
  RegisterKernels();
  for (int64_t rows : {1, 7, 300}) {
    for (int64_t c : {33, 768}) {
      const Tensor x = Random(rows * c, 31, 2.0f).Reshape({rows, c});
      const Tensor w = Random(c, 32, 1.0f), b = Random(c, 33, 1.0f);
      const Tensor dout = Random(rows * c, 34, 1.0f).Reshape({rows, c});
      const Tensor dx0 = Random(rows * c, 35, 1.0f).Reshape({rows, c});
      const Tensor dw0 = Random(c, 36, 1.0f), db0 = Random(c, 37, 1.0f);
      Tensor out = Tensor::Empty({rows, c}, DType::kF32, MemoryTag::kActivation);
      Tensor mean = Tensor::Empty({rows}, DType::kF32, MemoryTag::kActivation);
      Tensor rstd = Tensor::Empty({rows}, DType::kF32, MemoryTag::kActivation);
      Tensor dx = dx0.Clone(), dw = dw0.Clone(), db = db0.Clone();
      kernels::LayerNormForward(x, w, b, 1e-5f, out, mean, rstd);
      kernels::LayerNormBackward(dout, x, w, mean, rstd, dx, dw, db);
      Tensor d_x = Upload(x), d_w = Upload(w), d_b = Upload(b), d_dout = Upload(dout);
      Tensor d_out = OnDevice(rows * c).Reshape({rows, c}), d_mean = OnDevice(rows);
      Tensor d_rstd = OnDevice(rows);
      Tensor d_dx = Upload(dx0), d_dw = Upload(dw0), d_db = Upload(db0);
      kernels::LayerNormForward(d_x, d_w, d_b, 1e-5f, d_out, d_mean, d_rstd);
      kernels::LayerNormBackward(d_dout, d_x, d_w, d_mean, d_rstd, d_dx, d_dw, d_db);
      const std::string at = "rows " + std::to_string(rows) + " c " + std::to_string(c);
      for (const auto& [got, want, what] :
           {std::tuple{&d_out, &out, "out"}, std::tuple{&d_mean, &mean, "mean"},
            std::tuple{&d_rstd, &rstd, "rstd"}, std::tuple{&d_dx, &dx, "dx"},
            std::tuple{&d_dw, &dw, "dw"}, std::tuple{&d_db, &db, "db"}}) {
        ExpectClose(Download(*got), *want, absl::StrCat(what, " ", at), 1e-5f, 1e-4f);
      }
    }
  }
}

// RMSNorm through the entry points on device tensors against the CPU, at the LayerNorm test's
// shapes and tolerance (block sums in another order than the CPU's lanes).
TEST_F(CudaKernels, RMSNormMatchesTheCpu) {
  RegisterKernels();
  for (int64_t rows : {1, 7, 300}) {
    for (int64_t c : {33, 768}) {
      const Tensor x = Random(rows * c, 38, 2.0f).Reshape({rows, c});
      const Tensor w = Random(c, 39, 1.0f), dw0 = Random(c, 40, 1.0f);
      const Tensor dout = Random(rows * c, 41, 1.0f).Reshape({rows, c});
      const Tensor dx0 = Random(rows * c, 42, 1.0f).Reshape({rows, c});
      Tensor out = Tensor::Empty({rows, c}, DType::kF32, MemoryTag::kActivation);
      Tensor rstd = Tensor::Empty({rows}, DType::kF32, MemoryTag::kActivation);
      Tensor dx = dx0.Clone(), dw = dw0.Clone();
      kernels::RMSNormForward(x, w, 1e-6f, out, rstd);
      kernels::RMSNormBackward(dout, x, w, rstd, dx, dw);
      Tensor d_x = Upload(x), d_w = Upload(w), d_out = OnDevice(rows * c).Reshape({rows, c});
      Tensor d_rstd = OnDevice(rows), d_dx = Upload(dx0), d_dw = Upload(dw0);
      kernels::RMSNormForward(d_x, d_w, 1e-6f, d_out, d_rstd);
      kernels::RMSNormBackward(Upload(dout), d_x, d_w, d_rstd, d_dx, d_dw);
      const std::string at = absl::StrCat(" rows ", rows, " c ", c);
      ExpectClose(Download(d_out), out, "rms out" + at, 1e-5f, 1e-4f);
      ExpectClose(Download(d_rstd), rstd, "rms rstd" + at, 1e-5f, 1e-4f);
      ExpectClose(Download(d_dx), dx, "rms dx" + at, 1e-5f, 1e-4f);
      ExpectClose(Download(d_dw), dw, "rms dw" + at, 1e-5f, 1e-4f);
    }
  }
}

// SwiGLU through the entry points on device tensors: the CPU's exp is within 2 ulp, CUDA's expf
// within 2: the GELU tolerance.
TEST_F(CudaKernels, SwiGLUMatchesTheCpu) {
  RegisterKernels();
  for (int64_t n : Sizes()) {
    const Tensor gate = Random(n, 43, 3.0f), up = Random(n, 44, 1.0f), dout = Random(n, 45, 1.0f);
    const Tensor dgate0 = Random(n, 46, 1.0f), dup0 = Random(n, 47, 1.0f);
    Tensor out = Tensor::Empty({n}, DType::kF32, MemoryTag::kActivation);
    Tensor dgate = dgate0.Clone(), dup = dup0.Clone();
    kernels::SwiGLUForward(gate, up, out);
    kernels::SwiGLUBackward(dout, gate, up, dgate, dup);
    Tensor d_gate = Upload(gate), d_up = Upload(up), d_out = OnDevice(n);
    Tensor d_dgate = Upload(dgate0), d_dup = Upload(dup0);
    kernels::SwiGLUForward(d_gate, d_up, d_out);
    kernels::SwiGLUBackward(Upload(dout), d_gate, d_up, d_dgate, d_dup);
    const std::string at = absl::StrCat(" n ", n);
    ExpectClose(Download(d_out), out, "swiglu" + at);
    ExpectClose(Download(d_dgate), dgate, "swiglu dgate" + at);
    ExpectClose(Download(d_dup), dup, "swiglu dup" + at);
  }
}

// SumOfSquares through the entry point on device tensors: the CPU's blocks and order
// (sum_of_squares_formula.h) in double, so bitwise the CPU's result, for f32, bf16 and f16, at
// sizes around the block and beyond a million elements.
TEST_F(CudaKernels, SumOfSquaresIsBitwiseTheCpus) {
  RegisterKernels();
  for (int64_t n :
       {int64_t{1}, int64_t{4095}, int64_t{4096}, int64_t{4097}, (int64_t{1} << 20) + 3}) {
    for (DType dtype : {DType::kF32, DType::kBF16, DType::kF16}) {
      const Tensor wide = Random(n, 41, 3.0f);
      Tensor x = Tensor::Empty({n}, dtype, MemoryTag::kGrad);
      ConvertBuffer(wide.raw_data(), DType::kF32, x.raw_data(), dtype, n);
      EXPECT_EQ(kernels::SumOfSquares(Upload(x)), kernels::SumOfSquares(x))
          << DTypeName(dtype) << " n " << n;
    }
  }
}

// The element-wise entry points on device tensors against the CPU, each exact (the same
// operations in the same order): AddInto, Scale, Convert both ways for bf16 and f16 (bytes),
// RoundToDType, BiasAdd, BiasBackward (columns summed in the shared chunks on both); BiasGelu's
// pre-activation exact, its GELU within the GELU tolerance.
TEST_F(CudaKernels, ElementwiseEntryPointsMatchTheCpu) {
  RegisterKernels();
  for (int64_t rows : {1, 7, 3000}) {
    const int64_t c = 129, n = rows * c;
    const Tensor x = Random(n, 51, 2.0f).Reshape({rows, c}), y = Random(n, 52, 1.0f);
    const Tensor bias = Random(c, 53, 1.0f), dbias0 = Random(c, 54, 1.0f);
    const std::string at = " rows " + std::to_string(rows);
    Tensor sum = x.Clone().Reshape({n}), d_sum = Upload(x).Reshape({n});
    kernels::AddInto(sum, y);
    kernels::AddInto(d_sum, Upload(y));
    kernels::Scale(sum, 0.37f);
    kernels::Scale(d_sum, 0.37f);
    ExpectClose(Download(d_sum), sum, "AddInto, Scale" + at, 0.0f, 0.0f);
    for (DType narrow : {DType::kBF16, DType::kF16}) {
      Tensor h16 = Tensor::Empty({rows, c}, narrow, MemoryTag::kActivation);
      Tensor d16 = Tensor::Empty({rows, c}, narrow, MemoryTag::kActivation, &DeviceAllocator());
      kernels::Convert(x, h16);
      kernels::Convert(Upload(x), d16);
      absl::StatusOr<Tensor> back16 = ToHost(d16);
      ASSERT_TRUE(back16.ok()) << back16.status();
      EXPECT_EQ(0, std::memcmp(back16->raw_data(), h16.raw_data(), h16.nbytes()))
          << "Convert to " << DTypeName(narrow) << at;
      Tensor wide = OnDevice(n).Reshape({rows, c});
      kernels::Convert(d16, wide);  // and back: exact
      Tensor rounded = x.Clone(), d_rounded = Upload(x);
      kernels::RoundToDType(rounded, narrow);
      kernels::RoundToDType(d_rounded, narrow);
      ExpectClose(Download(wide), rounded, absl::StrCat("Convert from ", DTypeName(narrow), at),
                  0.0f, 0.0f);
      ExpectClose(Download(d_rounded), rounded,
                  absl::StrCat("RoundToDType ", DTypeName(narrow), at), 0.0f, 0.0f);
    }
    Tensor biased = x.Clone(), d_biased = Upload(x);
    kernels::BiasAdd(biased, bias);
    kernels::BiasAdd(d_biased, Upload(bias));
    ExpectClose(Download(d_biased), biased, "BiasAdd" + at, 0.0f, 0.0f);
    Tensor dbias = dbias0.Clone(), d_dbias = Upload(dbias0);
    kernels::BiasBackward(x, dbias);
    kernels::BiasBackward(Upload(x), d_dbias);
    ExpectClose(Download(d_dbias), dbias, "BiasBackward" + at, 0.0f, 0.0f);
    Tensor pre = x.Clone(), d_pre = Upload(x);
    Tensor act = Tensor::Empty({rows, c}, DType::kF32, MemoryTag::kActivation);
    Tensor d_act = OnDevice(n).Reshape({rows, c});
    kernels::BiasGeluForward(pre, bias, act);
    kernels::BiasGeluForward(d_pre, Upload(bias), d_act);
    ExpectClose(Download(d_pre), pre, "BiasGelu pre-activation" + at, 0.0f, 0.0f);
    ExpectClose(Download(d_act), act, "BiasGelu" + at);
  }
}

// Embedding through the entry points on device tensors: forward rows exact; the backward's sums
// (repeated ids, positions in order per column) bitwise; the vocabulary-shard versions with ids
// inside and outside the shard.
TEST_F(CudaKernels, EmbeddingMatchesTheCpu) {
  RegisterKernels();
  const int64_t vocab = 50, c = 70, n = 300, start = 20, shard_rows = 17;
  std::vector<int32_t> id_values(n);
  for (int64_t i = 0; i < n; ++i) id_values[i] = static_cast<int32_t>((i * 7 + i / 13) % vocab);
  const Tensor ids = Tensor::FromVector<int32_t>({n}, id_values, MemoryTag::kActivation);
  const Tensor table = Random(vocab * c, 61, 1.0f).Reshape({vocab, c});
  const Tensor shard = Random(shard_rows * c, 62, 1.0f).Reshape({shard_rows, c});
  const Tensor dout = Random(n * c, 63, 1.0f).Reshape({n, c});
  const Tensor d_ids = Upload(ids), d_dout = Upload(dout);
  for (bool sharded : {false, true}) {
    const Tensor& t = sharded ? shard : table;
    const Tensor dtable0 = Random(t.numel(), 64, 1.0f).Reshape(t.shape());
    Tensor out = Tensor::Empty({n, c}, DType::kF32, MemoryTag::kActivation);
    Tensor d_out = OnDevice(n * c).Reshape({n, c});
    Tensor dtable = dtable0.Clone(), d_dtable = Upload(dtable0);
    if (sharded) {
      kernels::EmbeddingShardForward(ids, t, start, out);
      kernels::EmbeddingShardForward(d_ids, Upload(t), start, d_out);
      kernels::EmbeddingShardBackward(dout, ids, start, dtable);
      kernels::EmbeddingShardBackward(d_dout, d_ids, start, d_dtable);
    } else {
      kernels::EmbeddingForward(ids, t, out);
      kernels::EmbeddingForward(d_ids, Upload(t), d_out);
      kernels::EmbeddingBackward(dout, ids, dtable);
      kernels::EmbeddingBackward(d_dout, d_ids, d_dtable);
    }
    const std::string what = sharded ? "shard " : "";
    ExpectClose(Download(d_out), out, what + "embedding forward", 0.0f, 0.0f);
    ExpectClose(Download(d_dtable), dtable, what + "embedding backward", 0.0f, 0.0f);
  }
  kernels::CheckDeviceErrors();  // nothing recorded
}

// Cross-entropy through the entry points on device tensors: the fused forward-backward and the
// vocabulary-shard pieces (two shards, statistics combined on the host as the all-reduces would).
// The CPU's exp is within 2 ulp and its sums run in lanes: losses within 1e-5 + 1e-5 relative,
// dlogits (accumulated into random values) within 1e-6 + 1e-5 relative.
TEST_F(CudaKernels, CrossEntropyMatchesTheCpu) {
  RegisterKernels();
  for (int64_t rows : {1, 7, 300}) {
    for (int64_t vocab : {33, 1000}) {
      const Tensor logits = Random(rows * vocab, 71, 3.0f).Reshape({rows, vocab});
      std::vector<int32_t> t(rows);
      for (int64_t r = 0; r < rows; ++r) t[r] = static_cast<int32_t>((r * 31 + 5) % vocab);
      const Tensor targets = Tensor::FromVector<int32_t>({rows}, t, MemoryTag::kActivation);
      const Tensor dloss = Random(rows, 72, 1.0f), dlogits0 = Random(rows * vocab, 73, 1.0f);
      Tensor losses = Tensor::Empty({rows}, DType::kF32, MemoryTag::kActivation);
      Tensor dlogits = dlogits0.Clone().Reshape({rows, vocab});
      kernels::CrossEntropyForwardBackward(logits, targets, dloss, losses, dlogits);
      Tensor d_losses = OnDevice(rows), d_dlogits = Upload(dlogits0).Reshape({rows, vocab});
      const Tensor d_logits = Upload(logits), d_targets = Upload(targets);
      kernels::CrossEntropyForwardBackward(d_logits, d_targets, Upload(dloss), d_losses, d_dlogits);
      const std::string at = absl::StrCat(" rows ", rows, " vocab ", vocab);
      ExpectClose(Download(d_losses), losses, "losses" + at, 1e-5f, 1e-5f);
      ExpectClose(Download(d_dlogits), dlogits, "dlogits" + at, 1e-6f, 1e-5f);
      // Shard statistics: each half's pieces on the device against the CPU's on the same half.
      const int64_t half = vocab / 2;
      for (int64_t start : {int64_t{0}, half}) {
        const int64_t width = start == 0 ? half : vocab - half;
        Tensor part = Tensor::Empty({rows, width}, DType::kF32, MemoryTag::kActivation);
        for (int64_t r = 0; r < rows; ++r) {
          std::memcpy(part.data<float>() + r * width, logits.data<float>() + r * vocab + start,
                      sizeof(float) * width);
        }
        std::vector<Tensor> stats, d_stats;
        for (int i = 0; i < 3; ++i) {
          stats.push_back(Tensor::Empty({rows}, DType::kF32, MemoryTag::kActivation));
          d_stats.push_back(OnDevice(rows));
        }
        kernels::CrossEntropyStats(part, targets, start, stats[0], stats[1], stats[2]);
        kernels::CrossEntropyStats(Upload(part), d_targets, start, d_stats[0], d_stats[1],
                                   d_stats[2]);
        for (int i = 0; i < 3; ++i) {
          ExpectClose(Download(d_stats[i]), stats[i], absl::StrCat("shard stats ", i, at), 1e-5f,
                      1e-5f);
        }
      }
    }
  }
  kernels::CheckDeviceErrors();
}

// Attention through the entry points on device tensors, f32 and bf16 (qkv and probs), at
// sequences of 1, 17 (less than a block) and 300 (more): forward output and probabilities,
// backward dqkv accumulated into random values. The dot products run in other orders than the
// CPU's: f32 within 1e-5 + 1e-4 relative; bf16, where a probability or dS may round to the
// neighbouring bf16 value, within 1e-2 of the largest element + 1e-2 relative (the bf16 attention
// test's bound against its f64 reference). Both forms of the CUDA kernels: the batched GEMMs on
// cuBLASLt (default) and the row kernels (LOOM_CUDA_ATTENTION=rows).
TEST_F(CudaKernels, AttentionMatchesTheCpu) {
  RegisterKernels();
  const int64_t batch = 2, heads = 3, c = 48;
  for (const char* form : {"gemm", "rows"}) {
    setenv("LOOM_CUDA_ATTENTION", form, 1);
    for (DType dtype : {DType::kF32, DType::kBF16}) {
      for (int64_t seq : {1, 17, 300}) {
        const Tensor qkv =
            As(Random(batch * seq * 3 * c, 81, 1.0f).Reshape({batch, seq, 3 * c}), dtype);
        const Tensor dout = Random(batch * seq * c, 82, 1.0f).Reshape({batch, seq, c});
        const Tensor dqkv0 = Random(qkv.numel(), 83, 1.0f).Reshape(qkv.shape());
        const Shape probs_shape{batch, heads, seq, seq};
        Tensor out = Tensor::Empty({batch, seq, c}, DType::kF32, MemoryTag::kActivation);
        Tensor probs = Tensor::Empty(probs_shape, dtype, MemoryTag::kActivation);
        Tensor dqkv = dqkv0.Clone();
        kernels::AttentionForward(qkv, heads, out, probs);
        kernels::AttentionBackward(dout, qkv, probs, heads, dqkv);
        const Tensor d_qkv = Upload(qkv);
        Tensor d_out = OnDevice(out.numel()).Reshape(out.shape());
        Tensor d_probs =
            Tensor::Empty(probs_shape, dtype, MemoryTag::kActivation, &DeviceAllocator());
        Tensor d_dqkv = Upload(dqkv0);
        kernels::AttentionForward(d_qkv, heads, d_out, d_probs);
        kernels::AttentionBackward(Upload(dout), d_qkv, d_probs, heads, d_dqkv);
        const bool bf16 = dtype == DType::kBF16;
        const float abs = bf16 ? 1e-2f : 1e-5f, rel = bf16 ? 1e-2f : 1e-4f;
        const std::string at = absl::StrCat(" ", form, " ", DTypeName(dtype), " seq ", seq);
        Tensor probs32 = Tensor::Empty(probs_shape, DType::kF32, MemoryTag::kActivation);
        kernels::Convert(probs, probs32);
        ExpectClose(Download(d_out), out, "out" + at, abs, rel);
        ExpectClose(Download(d_probs), probs32, "probs" + at, bf16 ? 4e-3f : 1e-6f, rel);
        float largest = 0.0f;
        for (float v : dqkv.ToF32Vector()) largest = std::max(largest, std::fabs(v));
        ExpectClose(Download(d_dqkv), dqkv, "dqkv" + at, bf16 ? 1e-2f * largest : abs, rel);
      }
    }
  }
  unsetenv("LOOM_CUDA_ATTENTION");
}

// The flash form through its entry points on device tensors against the CPU's (an exact softmax
// per row; the device sums an online softmax over tiles of keys): head sizes 16, 32 and 64, a
// sequence shorter than one tile, one ending inside a tile (300 = 4 · 64 + 44 query rows, 9 · 32
// + 12 keys) and one of several tiles, f32 and bf16 qkv (both read as f32 values, so one
// tolerance): out, lse and dqkv (added into random values) within 1e-5 + 1e-4 relative, dqkv
// against its largest element as the GEMM's.
TEST_F(CudaKernels, FlashAttentionMatchesTheCpu) {
  RegisterKernels();
  for (const auto& [heads, head_dim] : {std::pair{3, 16}, std::pair{2, 32}, std::pair{2, 64}}) {
    const int64_t batch = 2, c = heads * head_dim;
    for (DType dtype : {DType::kF32, DType::kBF16}) {
      for (int64_t seq : {1, 17, 300}) {
        const Tensor qkv =
            As(Random(batch * seq * 3 * c, 84, 1.0f).Reshape({batch, seq, 3 * c}), dtype);
        const Tensor dout = Random(batch * seq * c, 85, 1.0f).Reshape({batch, seq, c});
        const Tensor dqkv0 = Random(qkv.numel(), 86, 1.0f).Reshape(qkv.shape());
        Tensor out = Tensor::Empty({batch, seq, c}, DType::kF32, MemoryTag::kActivation);
        Tensor lse = Tensor::Empty({batch, heads, seq}, DType::kF32, MemoryTag::kActivation);
        Tensor dqkv = dqkv0.Clone();
        kernels::FlashAttentionForward(qkv, heads, out, lse);
        kernels::FlashAttentionBackward(dout, qkv, out, lse, heads, dqkv);
        const Tensor d_qkv = Upload(qkv);
        Tensor d_out = OnDevice(out.numel()).Reshape(out.shape());
        Tensor d_lse = OnDevice(lse.numel()).Reshape(lse.shape());
        Tensor d_dqkv = Upload(dqkv0);
        kernels::FlashAttentionForward(d_qkv, heads, d_out, d_lse);
        kernels::FlashAttentionBackward(Upload(dout), d_qkv, d_out, d_lse, heads, d_dqkv);
        const std::string at =
            absl::StrCat(" head_dim ", head_dim, " ", DTypeName(dtype), " seq ", seq);
        ExpectClose(Download(d_out), out, "flash out" + at, 1e-5f, 1e-4f);
        ExpectClose(Download(d_lse), lse, "flash lse" + at, 1e-5f, 1e-4f);
        float largest = 0.0f;
        for (float v : dqkv.ToF32Vector()) largest = std::max(largest, std::fabs(v));
        ExpectClose(Download(d_dqkv), dqkv, "flash dqkv" + at, 1e-5f * largest, 1e-4f);
      }
    }
  }
}

// FP8 through the entry points on device tensors: quantization bit for bit the CPU's (the same
// scale formula and e4m3 rounding), every scaling and input dtype, odd shapes (tails of blocks and
// tiles); the GEMM within f32 accumulation-order error of the CPU's product of the same
// quantized operands (1e-4 of the largest element + 1e-4 relative; bf16 out 1e-2), per-tensor and
// 1 x 128 / 128 x 128 scales (the scale layouts of fp8.h, which cuBLASLt must read as such).
TEST_F(CudaKernels, Fp8QuantizeAndMatmulMatchTheCpu) {
  RegisterKernels();
  auto quantize = [](const Tensor& x, Fp8Blocks blocks, Allocator* where) {
    std::pair<Tensor, Tensor> qs{
        Tensor::Empty(x.shape(), DType::kF8E4M3, MemoryTag::kActivation, where),
        Tensor::Empty(Fp8ScaleShape(x.dim(0), x.dim(1), blocks), DType::kF32,
                      MemoryTag::kActivation, where)};
    kernels::QuantizeFp8(x, blocks, qs.first, qs.second);
    return qs;
  };
  for (const auto& [rows, cols] : {std::pair{200, 300}, std::pair{256, 512}}) {
    for (DType dtype : {DType::kF32, DType::kBF16}) {
      const Tensor x = As(Random(rows * cols, 91, 2.0f).Reshape({rows, cols}), dtype);
      for (Fp8Blocks blocks : {Fp8Blocks::kTensor, Fp8Blocks::k1x128, Fp8Blocks::k128x128}) {
        const auto [q, scales] = quantize(x, blocks, nullptr);
        const auto [dq, dscales] = quantize(Upload(x), blocks, &DeviceAllocator());
        const std::string what = absl::StrCat(rows, "x", cols, " ", DTypeName(dtype), " blocks ",
                                              static_cast<int>(blocks));
        EXPECT_EQ(Download(dq), q.ToF32Vector()) << what;
        EXPECT_EQ(Download(dscales), scales.ToF32Vector()) << what;
      }
    }
  }
  const int64_t m = 96, k = 512, n = 272;
  const Tensor x = Random(m * k, 92, 1.0f).Reshape({m, k});
  const Tensor w = Random(n * k, 93, 0.05f).Reshape({n, k});
  for (const auto& [a_blocks, b_blocks] : {std::pair{Fp8Blocks::kTensor, Fp8Blocks::kTensor},
                                           std::pair{Fp8Blocks::k1x128, Fp8Blocks::k128x128}}) {
    const auto [a, sa] = quantize(x, a_blocks, nullptr);
    const auto [b, sb] = quantize(w, b_blocks, nullptr);
    for (DType out_dtype : {DType::kF32, DType::kBF16}) {
      Tensor want = Tensor::Empty({m, n}, out_dtype, MemoryTag::kActivation);
      kernels::Fp8Matmul(a, sa, a_blocks, b, sb, b_blocks, want);
      Tensor got = Tensor::Empty({m, n}, out_dtype, MemoryTag::kActivation, &DeviceAllocator());
      kernels::Fp8Matmul(Upload(a), Upload(sa), a_blocks, Upload(b), Upload(sb), b_blocks, got);
      const std::vector<float> g = Download(got), e = want.ToF32Vector();
      float largest = 0.0f;
      for (float v : e) largest = std::max(largest, std::fabs(v));
      const std::string what =
          absl::StrCat("Fp8Matmul ", static_cast<int>(a_blocks), " ", DTypeName(out_dtype));
      const float rel = out_dtype == DType::kF32 ? 1e-4f : 1e-2f;
      Tensor want32 = Tensor::Empty({m, n}, DType::kF32, MemoryTag::kActivation);
      std::copy(e.begin(), e.end(), want32.data<float>());
      ExpectClose(g, want32, what, 1e-4f * largest, rel);
    }
  }
}

// The mixture-of-experts kernels through the entry points on device tensors, routed by a host
// plan with slots not routed here (-1) and capacity drops: the permutation, the combines (the
// k slots summed in order, no contracted multiply-adds on either side) and the gate-scaled rows
// of the combine's backward exactly the CPU's; the gates' gradients (a block's tree sum against
// the CPU's sequential dot) within 1e-4 + 1e-5 relative; the grouped GEMM (a Matmul per segment)
// within the GEMM's 1e-4 + 1e-4; FP8 rows bit for bit (the dequantized values of either side's
// bytes, by the CPU).
TEST_F(CudaKernels, MoeKernelsMatchTheCpu) {
  RegisterKernels();
  const int64_t n = 300, k = 3, e = 5, c = 200, h = 48;
  std::vector<int32_t> choice(n * k);
  for (int64_t i = 0; i < n * k; ++i) {
    choice[i] = i % 11 == 0 ? -1 : static_cast<int32_t>((i * 7 + i / 5) % e);
  }
  const Tensor experts = Tensor::FromVector<int32_t>({n, k}, choice, MemoryTag::kActivation);
  const kernels::RoutingPlan plan = kernels::PlanRouting(experts, e, /*capacity=*/150);
  ASSERT_GT(plan.dropped, 0);
  const int64_t rows = plan.rows();
  const Tensor row_of = plan.row_of, d_row_of = Upload(plan.row_of);
  const Tensor x = Random(n * c, 101, 1.0f).Reshape({n, c});
  const Tensor gates = Random(n * k, 102, 1.0f).Reshape({n, k}), d_gates = Upload(gates);
  Tensor xp = Tensor::Zeros({rows, c}, DType::kF32, MemoryTag::kActivation);
  Tensor d_xp = OnDevice(rows * c).Reshape({rows, c});
  kernels::MoePermute(x, row_of, xp);
  kernels::MoePermute(Upload(x), d_row_of, d_xp);
  ExpectClose(Download(d_xp), xp, "MoePermute", 0.0f, 0.0f);
  for (bool gated : {false, true}) {
    Tensor y = Tensor::Empty({n, c}, DType::kF32, MemoryTag::kActivation);
    Tensor d_y = OnDevice(n * c).Reshape({n, c});
    kernels::MoeCombine(xp, row_of, gated ? &gates : nullptr, y);
    kernels::MoeCombine(d_xp, d_row_of, gated ? &d_gates : nullptr, d_y);
    ExpectClose(Download(d_y), y, gated ? "MoeCombine gated" : "MoeCombine", 0.0f, 0.0f);
  }
  const Tensor dout = Random(n * c, 103, 1.0f).Reshape({n, c});
  Tensor dy = Tensor::Empty({rows, c}, DType::kF32, MemoryTag::kActivation);
  Tensor dgates = Tensor::Empty({n, k}, DType::kF32, MemoryTag::kActivation);
  Tensor d_dy = OnDevice(rows * c).Reshape({rows, c}), d_dgates = OnDevice(n * k).Reshape({n, k});
  kernels::MoeCombineBackward(dout, xp, row_of, gates, dy, dgates);
  kernels::MoeCombineBackward(Upload(dout), d_xp, d_row_of, d_gates, d_dy, d_dgates);
  ExpectClose(Download(d_dy), dy, "MoeCombineBackward dy", 0.0f, 0.0f);
  ExpectClose(Download(d_dgates), dgates, "MoeCombineBackward dgates", 1e-4f, 1e-5f);
  // Expert 1 gets no rows: its segment is skipped on both sides.
  std::vector<int64_t> counts = plan.counts;
  counts[0] += counts[1];
  counts[1] = 0;
  const Tensor w = Random(e * h * c, 104, 0.05f).Reshape({e, h, c});
  Tensor out = Tensor::Empty({rows, h}, DType::kF32, MemoryTag::kActivation);
  Tensor d_out = OnDevice(rows * h).Reshape({rows, h});
  kernels::GroupedMatmul(xp, w, counts, {}, out, {.trans_b = true});
  kernels::GroupedMatmul(d_xp, Upload(w), counts, {}, d_out, {.trans_b = true});
  ExpectClose(Download(d_out), out, "GroupedMatmul", 1e-4f, 1e-4f);
  for (int64_t cols : {int64_t{70}, c}) {
    const Tensor v = Random(n * cols, 105, 3.0f).Reshape({n, cols});
    const Shape packed_shape{n, Fp8RowWidth(cols)};
    Tensor packed = Tensor::Empty(packed_shape, DType::kF8E4M3, MemoryTag::kActivation);
    Tensor d_packed =
        Tensor::Empty(packed_shape, DType::kF8E4M3, MemoryTag::kActivation, &DeviceAllocator());
    kernels::QuantizeRowsFp8(v, packed);
    kernels::QuantizeRowsFp8(Upload(v), d_packed);
    Tensor back = Tensor::Empty({n, cols}, DType::kF32, MemoryTag::kActivation);
    Tensor from_device = back.Clone();
    kernels::DequantizeRowsFp8(packed, back);
    absl::StatusOr<Tensor> device_bytes = ToHost(d_packed);
    ASSERT_TRUE(device_bytes.ok()) << device_bytes.status();
    kernels::DequantizeRowsFp8(*device_bytes, from_device);
    const std::string what = absl::StrCat("QuantizeRowsFp8 ", cols, " columns");
    EXPECT_EQ(from_device.ToF32Vector(), back.ToF32Vector()) << what;
    Tensor d_back = OnDevice(n * cols).Reshape({n, cols});
    kernels::DequantizeRowsFp8(Upload(packed), d_back);
    ExpectClose(Download(d_back), back, "DequantizeRowsFp8", 0.0f, 0.0f);
    // Packed rows viewed as f32 words move through MoePermute bitwise (the MoE layer forwards
    // FP8 rows that way).
    const Shape words{n, Fp8RowWidth(cols) / 4};
    Tensor wp = Tensor::Empty({rows, words[1]}, DType::kF32, MemoryTag::kActivation);
    Tensor d_wp = OnDevice(rows * words[1]).Reshape({rows, words[1]});
    kernels::MoePermute(packed.ViewAs(DType::kF32, words), row_of, wp);
    kernels::MoePermute(Upload(packed).ViewAs(DType::kF32, words), d_row_of, d_wp);
    absl::StatusOr<Tensor> moved = ToHost(d_wp);
    ASSERT_TRUE(moved.ok()) << moved.status();
    EXPECT_EQ(std::memcmp(moved->raw_data(), wp.raw_data(), wp.nbytes()), 0) << what;
  }
}

// Ids outside their range on the device: the kernels read zero rows instead, and the next
// CheckDeviceErrors fails naming what was checked, the position and the value. (A death test
// re-runs the binary, so the child starts its own CUDA context.)
TEST_F(CudaKernels, BadIdsOnTheDeviceFailAtCheckDeviceErrors) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  EXPECT_DEATH(
      {
        RegisterKernels();
        const Tensor table = Random(10 * 4, 91, 1.0f).Reshape({10, 4});
        const Tensor ids =
            Tensor::FromVector<int32_t>({5}, {1, 2, 9, 12, 0}, MemoryTag::kActivation);
        Tensor out = OnDevice(20).Reshape({5, 4});
        kernels::EmbeddingForward(Upload(ids), Upload(table), out);
        const std::vector<float> rows = Download(out);
        for (int j = 0; j < 4; ++j) {
          if (rows[3 * 4 + j] != 0.0f) std::abort();  // a wrong message, not the expected one
        }
        kernels::CheckDeviceErrors();
      },
      R"(Embedding ids\[3\] = 12 is outside \[0, 10\))");
}

// Waits on the host until everything queued on `stream` so far has run.
void Drain(cuda::Stream stream) {
  Event done;
  done.Record(stream);
  while (!done.Done()) {
  }
}

// Streams ordered by an event: work on a second stream that waits for the first one's event reads
// what the first wrote, although the first is held back by a spinning kernel.
TEST_F(CudaKernels, AStreamWaitingForAnEventSeesTheOtherStreamsWrites) {
  const int64_t n = 4096;
  const Tensor a = Random(n, 21, 1.0f), b = Random(n, 22, 1.0f);
  Tensor da = Upload(a), db = Upload(b), c = OnDevice(n), d = OnDevice(n);
  OwnedStream first, second;
  SpinForTesting(int64_t{200} << 20, first.get());  // roughly 0.1 s
  Add(In(da), In(db), Out(c), n, first.get());
  Event written;
  written.Record(first.get());
  second.Wait(written);
  Add(In(c), In(c), Out(d), n, second.get());
  Drain(second.get());
  const std::vector<float> got = Download(d);
  for (int64_t i = 0; i < n; ++i) {
    const float sum = a.data<float>()[i] + b.data<float>()[i];
    ASSERT_EQ(got[i], sum + sum) << i;
  }
}

// Stream-ordered reuse: memory a side stream's queued work still uses is not handed to the next
// tensor of its size; once that work has run, it is.
TEST_F(CudaKernels, MemoryUsedByQueuedWorkIsReusedOnlyAfterIt) {
  OwnedStream side;
  const int64_t n = int64_t{1} << 20;  // 4 MiB: cached by size
  const void* first = nullptr;
  {
    Tensor t = OnDevice(n);
    first = t.device_data();
    SpinForTesting(int64_t{200} << 20, side.get());
    RecordUse(t, side.get());
  }
  EXPECT_GE(DeviceAllocator().CacheStats().pending_bytes, 4 * n);
  Tensor u = OnDevice(n);
  EXPECT_NE(u.device_data(), first);
  u = Tensor();
  Drain(side.get());
  Tensor v = OnDevice(n);
  EXPECT_EQ(v.device_data(), first);
  EXPECT_EQ(DeviceAllocator().CacheStats().pending_bytes, 0);
}

}  // namespace
}  // namespace loom::runtime::kernels::cuda
