#include "parallel/layers/linear.h"

#include "runtime/kernels/bias_add.h"
#include "runtime/kernels/elementwise.h"
#include "runtime/kernels/matmul.h"

namespace loom::parallel {

using runtime::DType;
using runtime::MemoryTag;
using runtime::Shape;
using runtime::Tensor;
namespace kernels = runtime::kernels;

namespace {

// The weight's dimension that holds the output (or input) features in `layout`.
int OutDim(WeightLayout layout) { return layout == WeightLayout::kInOut ? 1 : 0; }
int InDim(WeightLayout layout) { return 1 - OutDim(layout); }

ShardSpec WeightSpec(const LinearOptions& o) {
  switch (o.tp.split) {
    case TpSplit::kColumn:
      return o.tp.Spec(OutDim(o.layout));
    case TpSplit::kRow:
      return o.tp.Spec(InDim(o.layout));
    case TpSplit::kNone:
      break;
  }
  return ShardSpec::Replicated();
}

}  // namespace

Linear::Linear(const std::string& prefix, int64_t in_features, int64_t out_features,
               LinearOptions options)
    : in_(in_features),
      out_(out_features),
      options_(options),
      weight_(prefix + ".weight",
              options.layout == WeightLayout::kInOut ? Shape{in_features, out_features}
                                                     : Shape{out_features, in_features},
              WeightSpec(options), /*weight_decay=*/true),
      // Column-parallel splits the bias with the output; row-parallel adds it after the sum.
      bias_(prefix + ".bias", {out_features},
            options.tp.split == TpSplit::kColumn ? options.tp.Spec(0) : ShardSpec::Replicated(),
            /*weight_decay=*/false) {
  weight_.AddUse();
  if (options_.bias) bias_.AddUse();
}

int64_t Linear::local_out_features() const {
  return weight_.local_shape()[OutDim(options_.layout)];
}

Tensor Linear::Forward(Stash& stash, const Tensor& x) {
  Tensor y = ForwardWithoutBias(stash, x);
  if (options_.bias) kernels::BiasAdd(y, bias_.value());
  return y;
}

Tensor Linear::ForwardWithoutBias(Stash& stash, const Tensor& x) {
  Shape out_shape = x.shape();
  out_shape.back() = local_out_features();
  Tensor y = Tensor::Empty(out_shape, DType::kF32, MemoryTag::kActivation);
  stash.Put(this, "x", x);  // first: under autocast the GEMM reads the stash's bf16 copy
  kernels::Matmul(stash.ForwardGemmInput(this, "x", x), weight_.value(), y,
                  {.trans_b = trans_b(), .compute_dtype = stash.ForwardGemmDType()});
  if (split(TpSplit::kRow)) AllReduceSumInPlace(*options_.tp.group, y);  // partial sums
  return y;
}

Tensor Linear::BackwardInput(Stash& stash, const Tensor& dy) {
  const Tensor x = stash.GetForGemm(this, "x");  // only its shape is read here
  Tensor dx = Tensor::Empty(x.shape(), DType::kF32, MemoryTag::kActivation);  // overwritten
  stash.Put(this, "dy", dy);  // first: under bf16 the GEMM reuses the stash's bf16 copy
  kernels::MatmulBackwardInput(stash.GetForGemm(this, "dy"), weight_.value(), dx,
                               {.trans_b = trans_b(), .compute_dtype = stash.GemmDType()});
  // Column-parallel: each rank's dx covers its output columns only; the input was whole.
  if (split(TpSplit::kColumn) && options_.tp.reduce_input_grad) {
    AllReduceSumInPlace(*options_.tp.group, dx);
  }
  if (options_.bias) {
    // The bias gradient's column sums from the f32 dy here, while it is at hand, so the weight
    // pass never widens a 16-bit dy back; it adds them to the gradient.
    Tensor db = Tensor::Zeros(bias_.local_shape(), DType::kF32, MemoryTag::kActivation);
    kernels::BiasBackward(dy, db);
    stash.PutExact(this, "db", db);
  }
  return dx;
}

void Linear::BackwardWeight(Stash& stash) {
  kernels::MatmulBackward(stash.GetForGemm(this, "x"), weight_.value(),
                          stash.GetForGemm(this, "dy"), nullptr, &weight_.grad(),
                          {.trans_b = trans_b(), .compute_dtype = stash.GemmDType()});
  weight_.ContributionDone();
  if (options_.bias) {
    kernels::AddInto(bias_.grad(), stash.Get(this, "db"));
    bias_.ContributionDone();
    stash.Erase(this, "db");
  }
  stash.Erase(this, "dy");
}

std::vector<Parameter*> Linear::Parameters() {
  if (options_.bias) return {&weight_, &bias_};
  return {&weight_};
}

}  // namespace loom::parallel
