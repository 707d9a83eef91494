// FP8 quantization and GEMM on the CPU (runtime/kernels/fp8.h), against their definitions: each
// block's scale found at the position its documented layout gives (blocks built with known
// maxima), dequantized values within e4m3's rounding, the GEMM against a double-precision product
// of the dequantized operands written from the layouts, and against the unquantized product
// within FP8's error. The CUDA twins are checked against these kernels on a GPU
// (cuda_kernels_test).
#include "runtime/kernels/fp8.h"

#include <gtest/gtest.h>

#include <cmath>
#include <vector>

#include "runtime/kernels/matmul.h"
#include "tests/runtime/emulated_device.h"
#include "tests/runtime/kernels/test_util.h"

namespace loom::runtime::kernels {
namespace {

using testing::RandomTensor;
using testing::ToDType;

constexpr Fp8Blocks kAllBlocks[] = {Fp8Blocks::kTensor, Fp8Blocks::k1x128, Fp8Blocks::k128x128};

struct Quantized {
  Tensor q, scales;
};

Quantized Quantize(const Tensor& x, Fp8Blocks blocks) {
  Quantized out{Tensor::Empty(x.shape(), DType::kF8E4M3, MemoryTag::kActivation, x.Beside()),
                Tensor::Empty(Fp8ScaleShape(x.dim(0), x.dim(1), blocks), DType::kF32,
                              MemoryTag::kActivation, x.Beside())};
  QuantizeFp8(x, blocks, out.q, out.scales);
  return out;
}

// The scale of element (r, c) of a [rows, cols] tensor, read from the layout fp8.h documents.
float ScaleOf(const Quantized& x, Fp8Blocks blocks, int64_t r, int64_t c) {
  const int64_t rows = x.q.dim(0), cols = x.q.dim(1);
  const float* s = x.scales.data<float>();
  switch (blocks) {
    case Fp8Blocks::kTensor:
      return s[0];
    case Fp8Blocks::k1x128:
      return s[(c / 128) * rows + r];
    case Fp8Blocks::k128x128: {
      const int64_t ld = ((cols + 127) / 128 + 3) / 4 * 4;
      return s[(r / 128) * ld + c / 128];
    }
  }
  return 0.0f;
}

double Dequantized(const Quantized& x, Fp8Blocks blocks, int64_t r, int64_t c) {
  const uint8_t bits = static_cast<const uint8_t*>(x.q.raw_data())[r * x.q.dim(1) + c];
  return static_cast<double>(F8E4M3ToF32(bits)) * ScaleOf(x, blocks, r, c);
}

// Every block of a [200, 300] tensor (two row tiles, column blocks of 128, 128 and 44) gets its own
// largest magnitude, 1 + its index, at one element; the rest is smaller. Each scale must be that
// maximum / 448, where the layout puts it.
TEST(Fp8Test, ScalesLandWhereTheLayoutSays) {
  const int64_t rows = 200, cols = 300;
  for (Fp8Blocks blocks : kAllBlocks) {
    Tensor x = Tensor::Zeros({rows, cols}, DType::kF32, MemoryTag::kActivation);
    float* p = x.data<float>();
    auto block_of = [&](int64_t r, int64_t c) -> int64_t {
      switch (blocks) {
        case Fp8Blocks::kTensor:
          return 0;
        case Fp8Blocks::k1x128:
          return r * 3 + c / 128;
        case Fp8Blocks::k128x128:
          return (r / 128) * 3 + c / 128;
      }
      return 0;
    };
    for (int64_t r = 0; r < rows; ++r) {
      for (int64_t c = 0; c < cols; ++c) p[r * cols + c] = 0.5f * static_cast<float>((r + c) % 3);
    }
    // The block's maximum at its last element, negative for odd blocks.
    std::vector<float> maximum(static_cast<size_t>(rows * 3), 0.0f);
    for (int64_t r = 0; r < rows; ++r) {
      for (int64_t c = 0; c < cols; ++c) {
        const int64_t id = block_of(r, c);
        maximum[id] = 2.0f + static_cast<float>(id);
      }
    }
    for (int64_t r = 0; r < rows; ++r) {
      for (int64_t c = 0; c < cols; ++c) {
        const int64_t id = block_of(r, c);
        const bool last_of_block = (c + 1 == cols || block_of(r, c + 1) != id) &&
                                   (r + 1 == rows || block_of(r + 1, c) != id);
        if (last_of_block) p[r * cols + c] = (id % 2 ? -1.0f : 1.0f) * maximum[id];
      }
    }
    const Quantized xq = Quantize(x, blocks);
    int64_t wrong = 0;
    for (int64_t r = 0; r < rows; ++r) {
      for (int64_t c = 0; c < cols; ++c) {
        wrong += ScaleOf(xq, blocks, r, c) != maximum[block_of(r, c)] / 448.0f;
      }
    }
    EXPECT_EQ(wrong, 0) << "blocks " << static_cast<int>(blocks);
    if (blocks == Fp8Blocks::k128x128) {  // [2, 4]: the fourth column is padding
      const float* s = xq.scales.data<float>();
      EXPECT_EQ(xq.scales.shape(), (Shape{2, 4}));
      EXPECT_EQ(s[3], 0.0f);
      EXPECT_EQ(s[7], 0.0f);
    }
  }
}

// e4m3 keeps 3 mantissa bits: a normal value is within 2^-4 of itself, relatively; below 2^-6
// (subnormals) within half their spacing, 2^-10, times the scale. Each block's largest element
// is stored as ±448.
TEST(Fp8Test, DequantizedValuesAreWithinE4M3Rounding) {
  for (DType dtype : {DType::kF32, DType::kBF16}) {
    for (Fp8Blocks blocks : kAllBlocks) {
      const Tensor x = ToDType(RandomTensor({130, 260}, 7, 3.0f), dtype);
      const Quantized xq = Quantize(x, blocks);
      const std::vector<float> v = x.ToF32Vector();
      int64_t wrong = 0, at_max = 0;
      for (int64_t r = 0; r < 130; ++r) {
        for (int64_t c = 0; c < 260; ++c) {
          const double want = v[r * 260 + c];
          const double bound =
              std::ldexp(std::fabs(want), -4) + std::ldexp(ScaleOf(xq, blocks, r, c), -10);
          wrong += std::fabs(Dequantized(xq, blocks, r, c) - want) > bound;
          const uint8_t bits = static_cast<const uint8_t*>(xq.q.raw_data())[r * 260 + c];
          at_max += (bits & 0x7F) == 0x7E;  // ±448
        }
      }
      EXPECT_EQ(wrong, 0) << DTypeName(dtype) << " blocks " << static_cast<int>(blocks);
      const int64_t blocks_count =
          xq.scales.numel() - (blocks == Fp8Blocks::k128x128 ? 2 * 1 : 0);  // minus padding
      EXPECT_GE(at_max, blocks_count) << DTypeName(dtype) << " blocks " << static_cast<int>(blocks);
    }
  }
}

// out = a · bᵀ of the dequantized operands, against double sums; f32 within 1e-5 relative, bf16
// output within its rounding (2^-8).
TEST(Fp8Test, MatmulIsTheProductOfTheDequantizedOperands) {
  const int64_t m = 37, k = 256, n = 48;
  const Tensor x = RandomTensor({m, k}, 11, 1.0f), w = RandomTensor({n, k}, 12, 0.05f);
  for (const auto& [a_blocks, b_blocks] : {std::pair{Fp8Blocks::kTensor, Fp8Blocks::kTensor},
                                           std::pair{Fp8Blocks::k1x128, Fp8Blocks::k128x128}}) {
    const Quantized a = Quantize(x, a_blocks), b = Quantize(w, b_blocks);
    for (DType out_dtype : {DType::kF32, DType::kBF16}) {
      Tensor out = Tensor::Empty({m, n}, out_dtype, MemoryTag::kActivation);
      Fp8Matmul(a.q, a.scales, a_blocks, b.q, b.scales, b_blocks, out);
      const std::vector<float> got = out.ToF32Vector();
      const double rel = out_dtype == DType::kF32 ? 1e-5 : std::ldexp(1.0, -8);
      int64_t wrong = 0;
      for (int64_t i = 0; i < m; ++i) {
        for (int64_t j = 0; j < n; ++j) {
          double want = 0.0, magnitude = 0.0;
          for (int64_t p = 0; p < k; ++p) {
            const double term = Dequantized(a, a_blocks, i, p) * Dequantized(b, b_blocks, j, p);
            want += term;
            magnitude += std::fabs(term);
          }
          wrong += std::fabs(got[i * n + j] - want) > rel * magnitude + 1e-7;
        }
      }
      EXPECT_EQ(wrong, 0) << DTypeName(out_dtype) << " a " << static_cast<int>(a_blocks);
    }
  }
}

// Against the unquantized product: FP8's error, a few percent of the result's norm.
TEST(Fp8Test, MatmulApproximatesTheFullPrecisionProduct) {
  const int64_t m = 64, k = 384, n = 80;
  const Tensor x = RandomTensor({m, k}, 21, 1.0f), w = RandomTensor({n, k}, 22, 0.05f);
  Tensor exact = Tensor::Empty({m, n}, DType::kF32, MemoryTag::kActivation);
  Matmul(x, w, exact, {.trans_b = true});
  const Quantized a = Quantize(x, Fp8Blocks::k1x128), b = Quantize(w, Fp8Blocks::k128x128);
  Tensor out = Tensor::Empty({m, n}, DType::kF32, MemoryTag::kActivation);
  Fp8Matmul(a.q, a.scales, Fp8Blocks::k1x128, b.q, b.scales, Fp8Blocks::k128x128, out);
  double err = 0.0, norm = 0.0;
  const std::vector<float> e = exact.ToF32Vector(), o = out.ToF32Vector();
  for (size_t i = 0; i < e.size(); ++i) {
    err += (o[i] - e[i]) * (o[i] - e[i]);
    norm += e[i] * e[i];
  }
  EXPECT_LT(std::sqrt(err / norm), 0.05);
}

// Device tensors reach the CUDA twins through the entry points (here an emulated device, whose
// twins are these CPU kernels): the same bits as on the host.
TEST(Fp8Test, DeviceTensorsDispatchToTheTwins) {
  runtime::testing::EmulatedDevice device;
  const Tensor x = RandomTensor({64, 256}, 31, 1.0f), w = RandomTensor({32, 256}, 32, 0.1f);
  auto on_device = [&](const Tensor& t) { return t.Clone(&device.allocator()); };
  const Quantized a = Quantize(x, Fp8Blocks::k1x128), b = Quantize(w, Fp8Blocks::k128x128);
  const Quantized da = Quantize(on_device(x), Fp8Blocks::k1x128);
  EXPECT_EQ(da.q.device(), Device::kCuda);
  EXPECT_EQ(da.q.ToF32Vector(), a.q.ToF32Vector());
  EXPECT_EQ(da.scales.ToF32Vector(), a.scales.ToF32Vector());
  Tensor out = Tensor::Empty({64, 32}, DType::kF32, MemoryTag::kActivation);
  Fp8Matmul(a.q, a.scales, Fp8Blocks::k1x128, b.q, b.scales, Fp8Blocks::k128x128, out);
  Tensor dout = Tensor::Empty({64, 32}, DType::kF32, MemoryTag::kActivation, &device.allocator());
  Fp8Matmul(on_device(a.q), on_device(a.scales), Fp8Blocks::k1x128, on_device(b.q),
            on_device(b.scales), Fp8Blocks::k128x128, dout);
  EXPECT_EQ(dout.ToF32Vector(), out.ToF32Vector());
}

TEST(Fp8DeathTest, MatmulRefusesWhatTheFp8TensorCoresDoNotTake) {
  auto e4m3 = [](Shape s) { return Tensor::Zeros(s, DType::kF8E4M3, MemoryTag::kActivation); };
  auto f32 = [](Shape s) { return Tensor::Zeros(s, DType::kF32, MemoryTag::kActivation); };
  Tensor out = f32({16, 32});
  EXPECT_DEATH(Fp8Matmul(e4m3({16, 128}), f32({1, 16}), Fp8Blocks::k1x128, e4m3({32, 128}),
                         f32({1}), Fp8Blocks::kTensor, out),
               "scales must be per tensor for both, or 1x128 for a and 128x128 for b");
  EXPECT_DEATH(Fp8Matmul(e4m3({16, 24}), f32({1}), Fp8Blocks::kTensor, e4m3({32, 24}), f32({1}),
                         Fp8Blocks::kTensor, out),
               "K \\(24\\) and N \\(32\\) must be multiples of 16");
  EXPECT_DEATH(Fp8Matmul(e4m3({16, 48}), f32({1, 16}), Fp8Blocks::k1x128, e4m3({32, 48}),
                         f32({1, 4}), Fp8Blocks::k128x128, out),
               "with block scales K \\(48\\) must be a multiple of 128");
}

}  // namespace
}  // namespace loom::runtime::kernels
