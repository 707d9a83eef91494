#include "runtime/kernels/fp8.h"

#include "absl/strings/str_cat.h"
#include "runtime/kernels/arg_check.h"
#include "runtime/kernels/cpu/cpu_kernels.h"
#include "runtime/kernels/cuda_twins.h"

namespace loom::runtime::kernels {

namespace {

int64_t Blocks(int64_t n) { return (n + kFp8Block - 1) / kFp8Block; }

const char* BlocksName(Fp8Blocks blocks) {
  switch (blocks) {
    case Fp8Blocks::kTensor:
      return "per tensor";
    case Fp8Blocks::k1x128:
      return "1x128";
    case Fp8Blocks::k128x128:
      return "128x128";
  }
  return "?";
}

}  // namespace

Shape Fp8ScaleShape(int64_t rows, int64_t cols, Fp8Blocks blocks) {
  switch (blocks) {
    case Fp8Blocks::kTensor:
      return {1};
    case Fp8Blocks::k1x128:
      return {Blocks(cols), rows};
    case Fp8Blocks::k128x128:
      return {Blocks(rows), (Blocks(cols) + 3) / 4 * 4};
  }
  return {};
}

void QuantizeFp8(const Tensor& x, Fp8Blocks blocks, Tensor& q, Tensor& scales) {
  ArgCheck check("QuantizeFp8", {{"x", &x}, {"q", &q}, {"scales", &scales}});
  check.ExpectRank(x, 2);
  check.Expect(x.dtype() == DType::kF32 || x.dtype() == DType::kBF16, "x must be f32 or bf16");
  check.ExpectDType(q, DType::kF8E4M3);
  check.ExpectShape(q, x.shape());
  check.ExpectDType(scales, DType::kF32);
  check.ExpectShape(scales, Fp8ScaleShape(x.dim(0), x.dim(1), blocks));
  if (check.OnCuda()) return check.Twin(CudaTwins().quantize_fp8)(x, blocks, q, scales);
  cpu::QuantizeFp8(x, blocks, q, scales);
}

void Fp8Matmul(const Tensor& a, const Tensor& scale_a, Fp8Blocks a_blocks, const Tensor& b,
               const Tensor& scale_b, Fp8Blocks b_blocks, Tensor& out) {
  ArgCheck check(
      "Fp8Matmul",
      {{"a", &a}, {"scale_a", &scale_a}, {"b", &b}, {"scale_b", &scale_b}, {"out", &out}});
  check.ExpectRank(a, 2);
  check.ExpectRank(b, 2);
  check.ExpectDType(a, DType::kF8E4M3);
  check.ExpectDType(b, DType::kF8E4M3);
  const int64_t m = a.dim(0), k = a.dim(1), n = b.dim(0);
  check.Expect(b.dim(1) == k, "a [M, K] and b [N, K] need the same K");
  const bool tensor_wise = a_blocks == Fp8Blocks::kTensor && b_blocks == Fp8Blocks::kTensor;
  const bool deepseek = a_blocks == Fp8Blocks::k1x128 && b_blocks == Fp8Blocks::k128x128;
  check.Expect(tensor_wise || deepseek,
               absl::StrCat("scales must be per tensor for both, or 1x128 for a and 128x128 for "
                            "b; got ",
                            BlocksName(a_blocks), " and ", BlocksName(b_blocks)));
  check.Expect(k % 16 == 0 && n % 16 == 0,
               absl::StrCat("K (", k, ") and N (", n, ") must be multiples of 16"));
  check.Expect(tensor_wise || k % kFp8Block == 0,
               absl::StrCat("with block scales K (", k, ") must be a multiple of 128"));
  check.ExpectDType(scale_a, DType::kF32);
  check.ExpectDType(scale_b, DType::kF32);
  check.ExpectShape(scale_a, Fp8ScaleShape(m, k, a_blocks));
  check.ExpectShape(scale_b, Fp8ScaleShape(n, k, b_blocks));
  check.Expect(out.dtype() == DType::kF32 || out.dtype() == DType::kBF16,
               "out must be f32 or bf16");
  check.ExpectShape(out, {m, n});
  if (check.OnCuda()) {
    return check.Twin(CudaTwins().fp8_matmul)(a, scale_a, a_blocks, b, scale_b, b_blocks, out);
  }
  cpu::Fp8Matmul(a, scale_a, a_blocks, b, scale_b, b_blocks, out);
}

}  // namespace loom::runtime::kernels
