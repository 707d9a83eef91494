#include <cuda_runtime.h>

#include "runtime/base/check.h"
#include "runtime/kernels/cpu/rows.h"
#include "runtime/kernels/cuda/cuda_kernels.h"
#include "runtime/kernels/cuda/device.h"
#include "runtime/kernels/cuda_twins.h"

namespace loom::runtime::kernels::cuda {
namespace {

const float* In(const Tensor& t) { return static_cast<const float*>(t.device_data()); }
float* Out(Tensor& t) { return static_cast<float*>(t.device_data()); }

ElemType ElemTypeOf(DType dtype) {
  return dtype == DType::kBF16  ? ElemType::kBF16
         : dtype == DType::kF16 ? ElemType::kF16
                                : ElemType::kF32;
}

void MatmulTwin(const Tensor& a, const Tensor& b, Tensor& out, int64_t m, int64_t n, int64_t k,
                const MatmulOptions& o) {
  // compute_dtype bf16: the entry point has rounded f32 operands to bf16 copies.
  LOOM_CHECK(o.compute_dtype == DType::kF32 || (a.dtype() == b.dtype()))
      << "Matmul on CUDA: operands of different dtypes";
  Gemm({.a = a.device_data(),
        .b = b.device_data(),
        .out = out.device_data(),
        .in = ElemTypeOf(a.dtype()),
        .out_type = ElemTypeOf(out.dtype()),
        .m = m,
        .n = n,
        .k = k,
        .trans_a = o.trans_a,
        .trans_b = o.trans_b,
        .alpha = o.alpha,
        .beta = o.beta},
       nullptr);
}

}  // namespace

void RegisterKernels() {
  CudaTwinTable& twins = CudaTwins();
  twins.add = [](const Tensor& a, const Tensor& b, Tensor& out) {
    Add(In(a), In(b), Out(out), a.numel(), nullptr);
  };
  twins.gelu_forward = [](const Tensor& x, Tensor& out) {
    GeluForward(In(x), Out(out), x.numel(), nullptr);
  };
  twins.gelu_backward = [](const Tensor& dout, const Tensor& x, Tensor& dx) {
    GeluBackward(In(dout), In(x), Out(dx), x.numel(), nullptr);
  };
  twins.matmul = MatmulTwin;
  twins.sum_of_squares = [](const Tensor& x) {
    // The block sums after the total, in one device buffer of doubles (8-byte i64 elements).
    Tensor sums = Tensor::Empty({SumOfSquaresBlocks(x.numel()) + 1}, DType::kI64,
                                MemoryTag::kWorkspace, &DeviceAllocator());
    double* d = static_cast<double*>(sums.device_data());
    SumOfSquares(x.device_data(), ElemTypeOf(x.dtype()), x.numel(), d + 1, d, nullptr);
    double total = 0.0;
    const cudaError_t e = cudaMemcpy(&total, d, sizeof(total), cudaMemcpyDeviceToHost);
    LOOM_CHECK(e == cudaSuccess) << "SumOfSquares on CUDA: " << cudaGetErrorString(e);
    return total;
  };
  twins.layer_norm_forward = [](const Tensor& x, const Tensor& w, const Tensor& b, float eps,
                                Tensor& out, Tensor& mean, Tensor& rstd) {
    LayerNormForward({.x = In(x),
                      .w = In(w),
                      .b = In(b),
                      .out = Out(out),
                      .mean = Out(mean),
                      .rstd = Out(rstd),
                      .rows = cpu::AsRows(x).rows,
                      .cols = x.dim(-1)},
                     eps, nullptr);
  };
  twins.layer_norm_backward = [](const Tensor& dout, const Tensor& x, const Tensor& w,
                                 const Tensor& mean, const Tensor& rstd, Tensor& dx, Tensor& dw,
                                 Tensor& db) {
    LayerNormBackward({.dout = In(dout),
                       .x = In(x),
                       .w = In(w),
                       .mean = In(mean),
                       .rstd = In(rstd),
                       .dx = Out(dx),
                       .dw = Out(dw),
                       .db = Out(db),
                       .rows = cpu::AsRows(x).rows,
                       .cols = x.dim(-1)},
                      nullptr);
  };
  twins.adamw = [](Tensor& master, const Tensor& grad, Tensor& m, Tensor& v,
                   const AdamWConfig& config, int64_t step, Tensor* copy_out) {
    AdamWUpdate({.master = Out(master),
                 .m = Out(m),
                 .v = Out(v),
                 .grad = In(grad),
                 .copy_bf16 = copy_out != nullptr ? static_cast<uint16_t*>(copy_out->device_data())
                                                  : nullptr},
                MakeAdamWStep(config, step), master.numel(), nullptr);
  };
}

}  // namespace loom::runtime::kernels::cuda
