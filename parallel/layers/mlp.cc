#include "parallel/layers/mlp.h"

#include "runtime/kernels/activation.h"
#include "runtime/kernels/elementwise.h"

namespace loom::parallel {

using runtime::DType;
using runtime::MemoryTag;
using runtime::Shape;
using runtime::Tensor;
namespace kernels = runtime::kernels;

namespace {

Tensor Like(const Tensor& t) {
  return Tensor::Empty(t.shape(), DType::kF32, MemoryTag::kActivation);
}
Tensor ZerosLike(const Tensor& t) {
  return Tensor::Zeros(t.shape(), DType::kF32, MemoryTag::kActivation);
}

}  // namespace

GeluMlp::GeluMlp(const std::string& prefix, int64_t dim, int64_t hidden,
                 const TensorParallelOptions& tp)
    : c_fc_(prefix + ".c_fc", dim, hidden, {.tp = tp.As(TpSplit::kColumn)}),
      c_proj_(prefix + ".c_proj", hidden, dim, {.tp = tp.As(TpSplit::kRow)}) {}

Tensor GeluMlp::Forward(Stash& stash, const Tensor& x) {
  // c_fc's bias add fused with the GELU: one pass over h instead of two.
  Tensor h = c_fc_.ForwardWithoutBias(stash, x);
  Tensor a = Like(h);
  kernels::BiasGeluForward(h, c_fc_.bias()->value(), a);
  stash.Put(this, "h", h);
  return c_proj_.Forward(stash, a);
}

Tensor GeluMlp::BackwardInput(Stash& stash, const Tensor& dy) {
  Tensor da = c_proj_.BackwardInput(stash, dy);
  const Tensor h = stash.GetBf16OrF32(this, "h");  // bf16 training: read as stored
  Tensor dh = Tensor::Empty(h.shape(), DType::kF32, MemoryTag::kActivation);
  kernels::GeluBackward(da, h, dh, /*accumulate=*/false);
  return c_fc_.BackwardInput(stash, dh);
}

void GeluMlp::BackwardWeight(Stash& stash) {
  c_proj_.BackwardWeight(stash);
  c_fc_.BackwardWeight(stash);
}

std::vector<Parameter*> GeluMlp::Parameters() { return ConcatParameters({&c_fc_, &c_proj_}); }

namespace {

// SwiGLU's gate and up read the same input: their dx are summed, then reduced over tp once.
LinearOptions SwiGluIn(const TensorParallelOptions& tp) {
  TensorParallelOptions column = tp.As(TpSplit::kColumn);
  column.reduce_input_grad = false;
  return {.bias = false, .layout = WeightLayout::kOutIn, .tp = column};
}

}  // namespace

SwiGluMlp::SwiGluMlp(const std::string& prefix, int64_t dim, int64_t hidden,
                     const TensorParallelOptions& tp)
    : tp_(tp),
      gate_proj_(prefix + ".gate_proj", dim, hidden, SwiGluIn(tp)),
      up_proj_(prefix + ".up_proj", dim, hidden, SwiGluIn(tp)),
      down_proj_(prefix + ".down_proj", hidden, dim,
                 {.bias = false, .layout = WeightLayout::kOutIn, .tp = tp.As(TpSplit::kRow)}) {}

Tensor SwiGluMlp::Forward(Stash& stash, const Tensor& x) {
  Tensor gate = gate_proj_.Forward(stash, x);
  Tensor up = up_proj_.Forward(stash, x);
  Tensor a = Like(gate);
  kernels::SwiGLUForward(gate, up, a);
  stash.Put(this, "gate", gate);
  stash.Put(this, "up", up);
  return down_proj_.Forward(stash, a);
}

Tensor SwiGluMlp::BackwardInput(Stash& stash, const Tensor& dy) {
  Tensor da = down_proj_.BackwardInput(stash, dy);
  const Tensor gate = stash.Get(this, "gate");
  const Tensor up = stash.Get(this, "up");
  Tensor dgate = ZerosLike(gate), dup = ZerosLike(up);
  kernels::SwiGLUBackward(da, gate, up, dgate, dup);
  const Shape x_shape = stash.GetForGemm(&gate_proj_, "x").shape();  // as the layer got x
  Tensor dx = gate_proj_.BackwardInput(stash, dgate);
  kernels::AddInto(dx, up_proj_.BackwardInput(stash, dup));
  return ReduceColumnInputGrad(tp_, std::move(dx), x_shape);
}

void SwiGluMlp::BackwardWeight(Stash& stash) {
  down_proj_.BackwardWeight(stash);
  up_proj_.BackwardWeight(stash);
  gate_proj_.BackwardWeight(stash);
}

std::vector<Parameter*> SwiGluMlp::Parameters() {
  return ConcatParameters({&gate_proj_, &up_proj_, &down_proj_});
}

}  // namespace loom::parallel
