#include "runtime/kernels/matmul.h"

#include "absl/strings/str_cat.h"
#include "runtime/base/check.h"
#include "runtime/kernels/arg_check.h"
#include "runtime/kernels/bias_add.h"
#include "runtime/kernels/cpu/cpu_kernels.h"
#include "runtime/kernels/cpu/rows.h"
#include "runtime/kernels/cuda_twins.h"
#include "runtime/kernels/elementwise.h"

namespace loom::runtime::kernels {
namespace {

// `t` rounded to bf16: the tensor itself when it is bf16, else a narrowed workspace copy.
Tensor AsBF16(const Tensor& t) {
  if (t.dtype() == DType::kBF16) return t;
  Tensor n = Tensor::Empty(t.shape(), DType::kBF16, MemoryTag::kWorkspace, t.Beside());
  Convert(t, n);
  return n;
}

}  // namespace

void Matmul(const Tensor& a, const Tensor& b, Tensor& out, const MatmulOptions& options) {
  const Tensor none;
  const Tensor& bias = options.bias != nullptr ? *options.bias : none;
  ArgCheck check("Matmul", {{"a", &a}, {"b", &b}, {"out", &out}, {"bias", &bias}});
  check.ExpectDefined(a);
  check.ExpectDefined(b);
  check.ExpectDefined(out);
  const DType dt = a.dtype();
  check.Expect(dt == DType::kF32 || dt == DType::kBF16 || dt == DType::kF16,
               "a must be f32, bf16 or f16");
  const bool bf16 = options.compute_dtype == DType::kBF16;
  check.Expect(options.compute_dtype == DType::kF32 || bf16, "compute_dtype must be f32 or bf16");
  if (bf16) {
    check.Expect(dt != DType::kF16 && (b.dtype() == DType::kF32 || b.dtype() == DType::kBF16),
                 "with compute_dtype bf16, a and b must be f32 or bf16");
  } else {
    check.ExpectDType(b, dt);
  }
  check.Expect(out.dtype() == DType::kF32 || out.dtype() == dt, "out must be f32 or a's dtype");
  check.ExpectRank(b, 2);
  check.Expect(a.rank() >= 1, "a must have at least one dimension");
  if (options.trans_a) check.ExpectRank(a, 2);
  const auto [a_rows, a_cols] = cpu::AsRows(a);
  const int64_t m = options.trans_a ? a_cols : a_rows;
  const int64_t k = options.trans_a ? a_rows : a_cols;
  const int64_t kb = options.trans_b ? b.dim(1) : b.dim(0);
  const int64_t n = options.trans_b ? b.dim(0) : b.dim(1);
  check.Expect(k == kb, absl::StrCat("inner dimensions differ: op(a) is [", m, ", ", k,
                                     "], op(b) is [", kb, ", ", n, "]"));
  const auto [out_rows, out_cols] = cpu::AsRows(out);
  check.Expect(out_rows == m && out_cols == n,
               absl::StrCat("out must hold [", m, ", ", n, "] (trans_a=", options.trans_a,
                            ", trans_b=", options.trans_b, ")"));
  if (!options.trans_a && a.rank() > 2) {
    check.Expect(out.rank() == a.rank(), "out must have a's leading dimensions");
  }
  if (options.bias != nullptr) {
    check.ExpectDType(bias, DType::kF32);
    check.ExpectShape(bias, {n});
    check.ExpectDType(out, DType::kF32);
  }
  if (check.OnCuda()) {
    if (bf16) return check.Twin(CudaTwins().matmul)(AsBF16(a), AsBF16(b), out, m, n, k, options);
    return check.Twin(CudaTwins().matmul)(a, b, out, m, n, k, options);
  }
  if (bf16) {
    cpu::Matmul(AsBF16(a), AsBF16(b), out, m, n, k, options);
  } else {
    cpu::Matmul(a, b, out, m, n, k, options);
  }
  if (options.bias != nullptr) BiasAdd(out, bias);
}

void MatmulBackward(const Tensor& a, const Tensor& b, const Tensor& dout, Tensor* da, Tensor* db,
                    const MatmulOptions& options) {
  LOOM_CHECK(options.bias == nullptr) << "MatmulBackward: a bias is Matmul's (forward) only";
  // out = op(a)·op(b)  =>  d op(a) = dout·op(b)ᵀ and d op(b) = op(a)ᵀ·dout; transposing a
  // product swaps its factors, which gives the four cases below without any explicit transpose.
  const bool ta = options.trans_a;
  const bool tb = options.trans_b;
  const DType compute = options.compute_dtype;
  if (da != nullptr) {
    if (!ta) {
      MatmulOptions accumulate = options;
      accumulate.beta = 1.0f;
      MatmulBackwardInput(dout, b, *da, accumulate);
    } else {
      Matmul(b, dout, *da,
             {.trans_a = tb,
              .trans_b = true,
              .alpha = options.alpha,
              .beta = 1.0f,
              .compute_dtype = compute});
    }
  }
  if (db != nullptr) {
    const Tensor a2 = ta ? a : a.Reshape({-1, a.dim(-1)});
    const Tensor dout2 = dout.Reshape({-1, dout.dim(-1)});
    if (!tb) {
      Matmul(a2, dout2, *db,
             {.trans_a = !ta,
              .trans_b = false,
              .alpha = options.alpha,
              .beta = 1.0f,
              .compute_dtype = compute});
    } else {
      Matmul(dout2, a2, *db,
             {.trans_a = true,
              .trans_b = ta,
              .alpha = options.alpha,
              .beta = 1.0f,
              .compute_dtype = compute});
    }
  }
}

void MatmulBackwardInput(const Tensor& dout, const Tensor& b, Tensor& da,
                         const MatmulOptions& options) {
  LOOM_CHECK(!options.trans_a) << "MatmulBackwardInput: trans_a must be false";
  Matmul(dout, b, da,
         {.trans_a = false,
          .trans_b = !options.trans_b,
          .alpha = options.alpha,
          .beta = options.beta,
          .compute_dtype = options.compute_dtype});
}

}  // namespace loom::runtime::kernels
