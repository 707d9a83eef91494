// The CUDA twins the kernel entry points dispatch to when their tensors are on a CUDA device
// (docs/gpu.md). loom_runtime knows nothing of CUDA: the CUDA library fills this table
// (cuda::RegisterKernels() in runtime/kernels/cuda/cuda_kernels.h), and an entry point whose twin
// is missing refuses device tensors with a message naming the op.
//
//   if (check.OnCuda()) return check.Twin(CudaTwins().gelu_forward)(x, out);
//   cpu::GeluForward(x, out);
#pragma once

#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "runtime/kernels/adamw.h"
#include "runtime/kernels/fp8.h"
#include "runtime/kernels/matmul.h"
#include "runtime/tensor.h"

namespace loom::runtime::kernels {

// Device time of one kernel entry point over a run (LOOM_CUDA_PROFILE=1).
struct DeviceOpTime {
  std::string op;
  int64_t calls = 0;
  double ms = 0.0;
};

struct CudaTwinTable {
  void (*add)(const Tensor& a, const Tensor& b, Tensor& out) = nullptr;
  void (*gelu_forward)(const Tensor& x, Tensor& out) = nullptr;
  void (*gelu_backward)(const Tensor& dout, const Tensor& x, Tensor& dx, bool accumulate) = nullptr;
  void (*adamw)(Tensor& master, const Tensor& grad, Tensor& m, Tensor& v, const AdamWConfig& config,
                int64_t step, Tensor* copy_out) = nullptr;
  void (*adamw_many)(std::span<const AdamWTensors> tensors, const AdamWConfig& config,
                     int64_t step) = nullptr;
  void (*layer_norm_forward)(const Tensor& x, const Tensor& w, const Tensor& b, float eps,
                             Tensor& out, Tensor& mean, Tensor& rstd) = nullptr;
  void (*layer_norm_backward)(const Tensor& dout, const Tensor& x, const Tensor& w,
                              const Tensor& mean, const Tensor& rstd, Tensor& dx, Tensor& dw,
                              Tensor& db) = nullptr;
  void (*rms_norm_forward)(const Tensor& x, const Tensor& w, float eps, Tensor& out,
                           Tensor& rstd) = nullptr;
  void (*rms_norm_backward)(const Tensor& dout, const Tensor& x, const Tensor& w,
                            const Tensor& rstd, Tensor& dx, Tensor& dw) = nullptr;
  void (*swiglu_forward)(const Tensor& gate, const Tensor& up, Tensor& out) = nullptr;
  void (*swiglu_backward)(const Tensor& dout, const Tensor& gate, const Tensor& up, Tensor& dgate,
                          Tensor& dup) = nullptr;
  void (*sgd)(Tensor& param, const Tensor& grad, Tensor& buffer, const SgdStep& step) = nullptr;
  double (*sum_of_squares)(const Tensor& x) = nullptr;
  // out[i] = SumOfSquares(xs[i]), read back from the device at once.
  void (*sums_of_squares)(std::span<const Tensor> xs, double* out) = nullptr;
  void (*add_into)(Tensor& dst, const Tensor& src) = nullptr;
  void (*scale)(Tensor& x, float factor) = nullptr;
  // dst = src converted (f32 <-> bf16 / f16, same shape).
  void (*convert)(const Tensor& src, Tensor& dst) = nullptr;
  // f32 x rounded in place to the nearest value of `dtype` (bf16 or f16).
  void (*round_to_dtype)(Tensor& x, DType dtype) = nullptr;
  void (*bias_add)(Tensor& x, const Tensor& bias) = nullptr;
  void (*bias_backward)(const Tensor& dout, Tensor& dbias) = nullptr;
  void (*bias_gelu_forward)(Tensor& x, const Tensor& bias, Tensor& out) = nullptr;
  // Embedding rows of ids - vocab_start (zeros, and no gradient, outside the table: another
  // shard's rows, or ids that CheckIndices has recorded).
  void (*embedding_forward)(const Tensor& ids, const Tensor& table, int64_t vocab_start,
                            bool sharded, Tensor& out) = nullptr;
  void (*embedding_backward)(const Tensor& dout, const Tensor& ids, int64_t vocab_start,
                             bool sharded, Tensor& dtable) = nullptr;
  void (*cross_entropy_stats)(const Tensor& logits, const Tensor& targets, int64_t vocab_start,
                              Tensor& row_max, Tensor& sum_exp, Tensor& target_logit) = nullptr;
  void (*cross_entropy_rescale)(const Tensor& local_max, const Tensor& global_max,
                                Tensor& sum_exp) = nullptr;
  void (*cross_entropy_loss)(const Tensor& row_max, const Tensor& sum_exp,
                             const Tensor& target_logit, Tensor& losses) = nullptr;
  void (*cross_entropy_backward)(const Tensor& logits, const Tensor& targets, int64_t vocab_start,
                                 const Tensor& row_max, const Tensor& sum_exp, const Tensor& dloss,
                                 Tensor& dlogits) = nullptr;
  void (*attention_forward)(const Tensor& qkv, int64_t num_heads, Tensor& out,
                            Tensor& probs) = nullptr;
  void (*attention_backward)(const Tensor& dout, const Tensor& qkv, const Tensor& probs,
                             int64_t num_heads, Tensor& dqkv) = nullptr;
  void (*flash_attention_forward)(const Tensor& qkv, int64_t num_heads, Tensor& out,
                                  Tensor& lse) = nullptr;
  void (*flash_attention_backward)(const Tensor& dout, const Tensor& qkv, const Tensor& out,
                                   const Tensor& lse, int64_t num_heads, Tensor& dqkv) = nullptr;
  // Records the first id outside [0, limit) for check_errors (kernels::CheckIndices).
  void (*check_indices)(const Tensor& ids, int64_t limit, const char* what) = nullptr;
  // Fails, naming what was checked, the position and the value, if check_indices recorded an id
  // since the last call; waits for the device.
  void (*check_errors)() = nullptr;
  void (*quantize_fp8)(const Tensor& x, Fp8Blocks blocks, Tensor& q, Tensor& scales) = nullptr;
  void (*fp8_matmul)(const Tensor& a, const Tensor& scale_a, Fp8Blocks a_blocks, const Tensor& b,
                     const Tensor& scale_b, Fp8Blocks b_blocks, Tensor& out) = nullptr;
  // Mixture of experts (runtime/kernels/moe.h): the token rows' permutation, the gate-weighted
  // combine (gates nullptr: weights 1) and its backward, FP8 rows for the dispatch. The routing
  // itself (scores, top-k, plans) is host code.
  void (*moe_permute)(const Tensor& x, const Tensor& row_of, Tensor& out) = nullptr;
  void (*moe_combine)(const Tensor& y, const Tensor& row_of, const Tensor* gates,
                      Tensor& out) = nullptr;
  void (*moe_combine_backward)(const Tensor& dout, const Tensor& y, const Tensor& row_of,
                               const Tensor& gates, Tensor& dy, Tensor& dgates) = nullptr;
  void (*quantize_rows_fp8)(const Tensor& x, Tensor& packed) = nullptr;
  void (*dequantize_rows_fp8)(const Tensor& packed, Tensor& x) = nullptr;
  // Profiling (LOOM_CUDA_PROFILE=1; cuda/op_timer.cc), else nullptr: an entry point that runs a
  // twin, outside any other entry point's, calls op_begin before it (a token) and op_end after
  // (ArgCheck does); op_report waits for the device and returns the time per op so far, most
  // first.
  void* (*op_begin)(std::string_view op) = nullptr;
  void (*op_end)(void* token) = nullptr;
  std::vector<DeviceOpTime> (*op_report)() = nullptr;
  // Matmul after the entry point's checks (op(a) is [m, k], op(b) [k, n], out [m, n]).
  void (*matmul)(const Tensor& a, const Tensor& b, Tensor& out, int64_t m, int64_t n, int64_t k,
                 const MatmulOptions& options) = nullptr;
};

// The process-wide table; filled once, before device tensors reach the entry points.
CudaTwinTable& CudaTwins();

}  // namespace loom::runtime::kernels
