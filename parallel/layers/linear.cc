#include "parallel/layers/linear.h"

#include "runtime/base/check.h"
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
      own_weight_(std::in_place, prefix + ".weight",
                  options.layout == WeightLayout::kInOut ? Shape{in_features, out_features}
                                                         : Shape{out_features, in_features},
                  WeightSpec(options), /*weight_decay=*/true),
      weight_(&*own_weight_) {
  weight_->AddUse();
  if (!options_.bias) return;
  // Column-parallel splits the bias with the output; row-parallel adds it after the sum.
  bias_.emplace(prefix + ".bias", runtime::Shape{out_features},
                options.tp.split == TpSplit::kColumn ? options.tp.Spec(0) : ShardSpec::Replicated(),
                /*weight_decay=*/false);
  bias_->AddUse();
}

Linear::Linear(Parameter& shared, LinearOptions options)
    : in_(shared.global_shape()[InDim(options.layout)]),
      out_(shared.global_shape()[OutDim(options.layout)]),
      options_(options),
      weight_(&shared) {
  LOOM_CHECK(!options.bias) << shared.name() << ": a layer over a shared weight has no bias";
  LOOM_CHECK(shared.shard_spec().ToString() == WeightSpec(options).ToString())
      << shared.name() << " is " << shared.shard_spec().ToString() << " but the layer over it "
      << "would split it as " << WeightSpec(options).ToString();
  weight_->AddUse();
}

int64_t Linear::local_out_features() const {
  return weight_->local_shape()[OutDim(options_.layout)];
}

Tensor Linear::Forward(Stash& stash, const Tensor& x) {
  return ForwardWith(stash, x, bias_ ? &bias_->value() : nullptr);
}

Tensor Linear::ForwardWithoutBias(Stash& stash, const Tensor& x) {
  return ForwardWith(stash, x, nullptr);
}

Tensor Linear::ForwardWith(Stash& stash, const Tensor& x, const Tensor* bias) {
  // First: under autocast the GEMM reads the stash's bf16 copy. Under sequence parallelism x is
  // this rank's tokens, and a column-parallel backward gathers them again (as Megatron does)
  // instead of keeping the whole.
  stash.Put(this, "x", x);
  const Tensor in = stash.ForwardGemmInput(this, "x", x);
  const runtime::DType compute = stash.ForwardGemmDType();
  const bool row_parallel = split(TpSplit::kRow);
  const RowGemm gemm = [&](const Tensor& rows, Tensor& out) {
    kernels::Matmul(
        rows, weight_->GemmOperand(compute), out,
        {.trans_b = trans_b(), .compute_dtype = compute, .bias = row_parallel ? nullptr : bias});
  };
  // Column-parallel: over every rank's tokens (SP); row-parallel: partial sums reduced over tp.
  if (split(TpSplit::kColumn)) return GatherMatmul(options_.tp, in, local_out_features(), gemm);
  if (row_parallel) {
    Tensor y = MatmulReduce(options_.tp, in, local_out_features(), gemm);
    if (bias != nullptr) kernels::BiasAdd(y, *bias);
    return y;
  }
  Shape out_shape = in.shape();
  out_shape.back() = local_out_features();
  Tensor y = Tensor::Empty(out_shape, DType::kF32, MemoryTag::kActivation);
  gemm(in, y);
  return y;
}

Tensor Linear::BackwardInput(Stash& stash, const Tensor& dy) {
  const Shape x_shape = stash.GetForGemm(this, "x").shape();
  const int64_t in_features = weight_->local_shape()[InDim(options_.layout)];
  const runtime::DType compute = stash.GemmDType();
  const RowGemm gemm = [&](const Tensor& rows, Tensor& out) {
    kernels::MatmulBackwardInput(rows, weight_->GemmOperand(compute), out,
                                 {.trans_b = trans_b(), .compute_dtype = compute});
  };
  if (bias_) {
    // The bias gradient's column sums from the f32 dy here, while it is at hand, so the weight
    // pass never widens a 16-bit dy back; it adds them to the gradient. (Row-parallel under SP:
    // this rank's tokens only, a partial sum that data parallelism completes over tp.)
    Tensor db = Tensor::Zeros(bias_->local_shape(), DType::kF32, MemoryTag::kActivation);
    kernels::BiasBackward(dy, db);
    stash.PutExact(this, "db", db);
  }
  // First: under bf16 the GEMMs reuse the stash's bf16 copy.
  stash.Put(this, "dy", dy);
  if (split(TpSplit::kRow)) {
    // Every token's output gradient (gathered under SP): this rank's input rows need all of them,
    // and so does the weight pass, which gets the gathered whole.
    Tensor whole_dy;
    Tensor dx =
        GatherMatmul(options_.tp, stash.GetForGemm(this, "dy"), in_features, gemm, &whole_dy);
    stash.Put(this, "dy", whole_dy);
    return dx.Reshape(x_shape);
  }
  if (split(TpSplit::kColumn) && options_.tp.reduce_input_grad) {
    // Each rank's dx covers its output columns only: summed over tp (SP: and scattered).
    return MatmulReduce(options_.tp, stash.GetForGemm(this, "dy"), in_features, gemm)
        .Reshape(x_shape);
  }
  Shape dx_shape = dy.shape();
  dx_shape.back() = in_features;
  Tensor dx = Tensor::Empty(dx_shape, DType::kF32, MemoryTag::kActivation);  // overwritten
  gemm(stash.GetForGemm(this, "dy"), dx);
  // Column-parallel without its own reduction under SP: every token's partial dx; the caller
  // (SwiGLU) sums several and reduces once.
  if (split(TpSplit::kColumn) && options_.tp.sp()) return dx;
  return dx.Reshape(x_shape);
}

void Linear::BackwardWeight(Stash& stash) {
  Tensor in = stash.GetForGemm(this, "x");
  if (split(TpSplit::kColumn)) in = ColumnInput(options_.tp, in);
  const Tensor dy = stash.GetForGemm(this, "dy");
  kernels::MatmulBackward(in.Reshape({-1, in.dim(-1)}), weight_->value(),
                          dy.Reshape({-1, dy.dim(-1)}), nullptr, &weight_->grad(),
                          {.trans_b = trans_b(), .compute_dtype = stash.GemmDType()});
  weight_->ContributionDone();
  if (bias_) {
    kernels::AddInto(bias_->grad(), stash.Get(this, "db"));
    bias_->ContributionDone();
    stash.Erase(this, "db");
  }
  stash.Erase(this, "dy");
}

std::vector<Parameter*> Linear::Parameters() {
  if (own_weight_ == std::nullopt) return {};
  if (bias_) return {weight_, &*bias_};
  return {weight_};
}

}  // namespace loom::parallel
