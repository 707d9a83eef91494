#include "runtime/kernels/cuda/cuda_kernels.h"
#include "runtime/kernels/cuda_twins.h"

namespace loom::runtime::kernels::cuda {
namespace {

const float* In(const Tensor& t) { return static_cast<const float*>(t.device_data()); }
float* Out(Tensor& t) { return static_cast<float*>(t.device_data()); }

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
