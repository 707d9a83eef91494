// The CUDA twins the kernel entry points dispatch to when their tensors are on a CUDA device
// (docs/gpu.md). loom_runtime knows nothing of CUDA: the CUDA library fills this table
// (cuda::RegisterKernels() in runtime/kernels/cuda/cuda_kernels.h), and an entry point whose twin
// is missing refuses device tensors with a message naming the op.
//
//   if (check.OnCuda()) return check.Twin(CudaTwins().gelu_forward)(x, out);
//   cpu::GeluForward(x, out);
#pragma once

#include "runtime/kernels/adamw.h"
#include "runtime/kernels/matmul.h"
#include "runtime/tensor.h"

namespace loom::runtime::kernels {

struct CudaTwinTable {
  void (*add)(const Tensor& a, const Tensor& b, Tensor& out) = nullptr;
  void (*gelu_forward)(const Tensor& x, Tensor& out) = nullptr;
  void (*gelu_backward)(const Tensor& dout, const Tensor& x, Tensor& dx) = nullptr;
  void (*adamw)(Tensor& master, const Tensor& grad, Tensor& m, Tensor& v, const AdamWConfig& config,
                int64_t step, Tensor* copy_out) = nullptr;
  void (*layer_norm_forward)(const Tensor& x, const Tensor& w, const Tensor& b, float eps,
                             Tensor& out, Tensor& mean, Tensor& rstd) = nullptr;
  void (*layer_norm_backward)(const Tensor& dout, const Tensor& x, const Tensor& w,
                              const Tensor& mean, const Tensor& rstd, Tensor& dx, Tensor& dw,
                              Tensor& db) = nullptr;
  double (*sum_of_squares)(const Tensor& x) = nullptr;
  // Matmul after the entry point's checks (op(a) is [m, k], op(b) [k, n], out [m, n]).
  void (*matmul)(const Tensor& a, const Tensor& b, Tensor& out, int64_t m, int64_t n, int64_t k,
                 const MatmulOptions& options) = nullptr;
};

// The process-wide table; filled once, before device tensors reach the entry points.
CudaTwinTable& CudaTwins();

}  // namespace loom::runtime::kernels
