#include "runtime/kernels/attention.h"

#include "absl/strings/str_cat.h"
#include "runtime/kernels/arg_check.h"
#include "runtime/kernels/cpu/cpu_kernels.h"
#include "runtime/kernels/cuda_twins.h"

namespace loom::runtime::kernels {
namespace {

// Validates qkv [B, T, 3C] and returns {B, T, C}.
std::array<int64_t, 3> CheckQkv(const ArgCheck& check, const Tensor& qkv, int64_t num_heads) {
  check.Expect(qkv.dtype() == DType::kF32 || qkv.dtype() == DType::kBF16,
               "qkv must be f32 or bf16");
  check.ExpectRank(qkv, 3);
  check.Expect(num_heads >= 1, absl::StrCat("num_heads must be >= 1, got ", num_heads));
  const int64_t c3 = qkv.dim(2);
  check.Expect(c3 % (3 * num_heads) == 0, absl::StrCat("qkv's last dimension ", c3,
                                                       " must be 3 · num_heads · head_dim with "
                                                       "num_heads = ",
                                                       num_heads));
  return {qkv.dim(0), qkv.dim(1), c3 / 3};
}

}  // namespace

void AttentionForward(const Tensor& qkv, int64_t num_heads, Tensor& out, Tensor& probs) {
  ArgCheck check("AttentionForward", {{"qkv", &qkv}, {"out", &out}, {"probs", &probs}});
  const auto [b, t, c] = CheckQkv(check, qkv, num_heads);
  check.ExpectDType(out, DType::kF32);
  check.ExpectShape(out, {b, t, c});
  check.ExpectDType(probs, qkv.dtype());
  check.ExpectShape(probs, {b, num_heads, t, t});
  if (check.OnCuda()) {
    return check.Twin(CudaTwins().attention_forward)(qkv, num_heads, out, probs);
  }
  cpu::AttentionForward(qkv, num_heads, out, probs);
}

void AttentionBackward(const Tensor& dout, const Tensor& qkv, const Tensor& probs,
                       int64_t num_heads, Tensor& dqkv) {
  ArgCheck check("AttentionBackward",
                 {{"dout", &dout}, {"qkv", &qkv}, {"probs", &probs}, {"dqkv", &dqkv}});
  const auto [b, t, c] = CheckQkv(check, qkv, num_heads);
  check.ExpectDType(dout, DType::kF32);
  check.ExpectShape(dout, {b, t, c});
  check.ExpectDType(probs, qkv.dtype());
  check.ExpectShape(probs, {b, num_heads, t, t});
  check.ExpectDType(dqkv, DType::kF32);
  check.ExpectShape(dqkv, qkv.shape());
  if (check.OnCuda()) {
    return check.Twin(CudaTwins().attention_backward)(dout, qkv, probs, num_heads, dqkv);
  }
  cpu::AttentionBackward(dout, qkv, probs, num_heads, dqkv);
}

namespace {

// The flash form's out [B, T, C] and lse [B, NH, T], f32.
void CheckFlashOutputs(const ArgCheck& check, const std::array<int64_t, 3>& btc, int64_t num_heads,
                       const Tensor& out, const Tensor& lse) {
  const auto [b, t, c] = btc;
  check.ExpectDType(out, DType::kF32);
  check.ExpectShape(out, {b, t, c});
  check.ExpectDType(lse, DType::kF32);
  check.ExpectShape(lse, {b, num_heads, t});
}

}  // namespace

void FlashAttentionForward(const Tensor& qkv, int64_t num_heads, Tensor& out, Tensor& lse) {
  ArgCheck check("FlashAttentionForward", {{"qkv", &qkv}, {"out", &out}, {"lse", &lse}});
  CheckFlashOutputs(check, CheckQkv(check, qkv, num_heads), num_heads, out, lse);
  if (check.OnCuda()) {
    return check.Twin(CudaTwins().flash_attention_forward)(qkv, num_heads, out, lse);
  }
  cpu::FlashAttentionForward(qkv, num_heads, out, lse);
}

void FlashAttentionBackward(const Tensor& dout, const Tensor& qkv, const Tensor& out,
                            const Tensor& lse, int64_t num_heads, Tensor& dqkv) {
  ArgCheck check("FlashAttentionBackward",
                 {{"dout", &dout}, {"qkv", &qkv}, {"out", &out}, {"lse", &lse}, {"dqkv", &dqkv}});
  const std::array<int64_t, 3> btc = CheckQkv(check, qkv, num_heads);
  CheckFlashOutputs(check, btc, num_heads, out, lse);
  check.ExpectDType(dout, DType::kF32);
  check.ExpectShape(dout, out.shape());
  check.ExpectDType(dqkv, DType::kF32);
  check.ExpectShape(dqkv, qkv.shape());
  if (check.OnCuda()) {
    return check.Twin(CudaTwins().flash_attention_backward)(dout, qkv, out, lse, num_heads, dqkv);
  }
  cpu::FlashAttentionBackward(dout, qkv, out, lse, num_heads, dqkv);
}

}  // namespace loom::runtime::kernels
