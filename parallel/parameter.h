// Parameter: a named, trainable tensor with its gradient, global shape and shard spec.
//
//   Parameter w("h.0.mlp.c_fc.weight", {384, 1536}, ShardSpec::Replicated(), /*decay=*/true);
//   w.Initialize(init);                  // value + zeroed grad, both f32
//   Matmul(x, w.value(), y);             // layers read value() and accumulate into grad()
//   w.ContributionDone();                // fires the grad-ready hook once all uses contributed
//
// Names follow Hugging Face conventions where one exists (GPT-2: "wte.weight",
// "h.0.attn.c_attn.weight"), so checkpoints load in the usual tools. The shard spec says how the
// global parameter maps onto ranks; DP, ZeRO, checkpoints and the planner read it. Today every
// parameter is held whole (replicated); TP/EP layers will create split and expert-owned ones.
#pragma once

#include <functional>
#include <string>
#include <vector>

#include "parallel/shard.h"
#include "runtime/tensor.h"

namespace loom::parallel {

class Parameter {
 public:
  // Called with the parameter when its gradient for the current backward is complete.
  using GradReadyHook = std::function<void(Parameter&)>;
  // Fills `out` (f32, any shape) with elements [offset, offset + out.numel()) of the whole
  // parameter's initial value, flattened row-major in global coordinates — any slice gets exactly
  // the values the whole parameter would (counter-based RNG), so a tensor-parallel shard, or a
  // ZeRO-3 shard of one, is initialised without the whole.
  using Initializer = std::function<void(runtime::Tensor& out, int64_t offset)>;

  Parameter(std::string name, runtime::Shape global_shape, ShardSpec spec, bool weight_decay);

  const std::string& name() const { return name_; }
  const runtime::Shape& global_shape() const { return global_shape_; }
  const ShardSpec& shard_spec() const { return spec_; }
  // The shape of this rank's shard (the global shape when replicated).
  const runtime::Shape& local_shape() const { return local_shape_; }
  int64_t local_numel() const { return runtime::NumElements(local_shape_); }
  // Marks this rank's gradient as a partial sum over `axis` too (ShardSpec::grad_partial_over).
  void AddGradPartialOver(const std::string& axis) {
    if (!spec_.grad_partial_over_axis(axis)) spec_.grad_partial_over.push_back(axis);
  }
  // True for matrices (weight decay applies, as in GPT-2 training); false for biases, norms.
  bool weight_decay() const { return weight_decay_; }

  // f32 value and gradient of this rank's shard (the whole parameter when replicated).
  runtime::Tensor& value() { return value_; }
  const runtime::Tensor& value() const { return value_; }
  runtime::Tensor& grad() { return grad_; }
  const runtime::Tensor& grad() const { return grad_; }
  // With bf16 working weights (mixed precision), their bf16 bits, of which value() is the exact
  // widening; undefined otherwise. GEMMs on bf16 operands read it instead of narrowing value().
  const runtime::Tensor& low_value() const { return low_value_; }
  // value(), or low_value() when `compute` is bf16 and it is bound: the same numbers either way.
  const runtime::Tensor& GemmOperand(runtime::DType compute) const {
    return compute == runtime::DType::kBF16 && low_value_.defined() ? low_value_ : value_;
  }

  // Allocates value (tag param) and a zeroed grad (tag grad) of the local shape.
  void Allocate(runtime::Allocator* allocator = nullptr);
  // How to produce the initial value (set by the model); Materialize allocates and fills it.
  void SetInitializer(Initializer init) { initializer_ = std::move(init); }
  const Initializer& initializer() const { return initializer_; }
  void Materialize(runtime::Allocator* allocator = nullptr);
  // Elements [offset, offset + out.numel()) of this rank's shard (flattened local coordinates)
  // of the starting value into `out`: the allocated value when there is one (loaded weights, a
  // resumed checkpoint), else the initializer's values for the matching global elements.
  void InitialValues(int64_t offset, runtime::Tensor out) const;
  // Zeroes grad (if bound) and restarts the count of contributions.
  void ZeroGrad();
  // Rebinds value or grad to other storage of the local shape (views into data parallelism's flat
  // buffers), or releases it with an undefined tensor while a ZeRO-3 shard is not gathered or a
  // ZeRO-2/3 gradient has no storage. Layers read value() and grad() at each use, so a rebinding
  // takes effect at once.
  void BindValue(runtime::Tensor value);
  void BindGrad(runtime::Tensor grad);
  // Binds low_value() (bf16, the local shape), or releases it with an undefined tensor; whoever
  // binds it keeps it equal to value() (data parallelism: the bf16 copy value() was widened from).
  void BindLowValue(runtime::Tensor low);

  // Number of places in the model that use this parameter (2 for a tied embedding / LM head).
  void AddUse() { ++uses_; }
  // How many of those uses this rank runs (a pipeline rank holding only the embedding or only
  // the tied LM head runs one of the tied weight's two).
  void SetUses(int uses) { uses_ = uses; }
  int uses() const { return uses_; }
  // Each use calls this after adding its contribution to grad(); the last one of a backward pass
  // calls the hook.
  void ContributionDone();
  void SetGradReadyHook(GradReadyHook hook) { hook_ = std::move(hook); }

  // Row gradients (data parallelism's Options::sparse_embedding): an embedding table's lookup
  // touches only the rows of a batch's tokens, so its gradient can travel as (ids, rows) instead
  // of a dense table. While enabled, the lookup hands its gradient to AddRowGradients instead of
  // adding it into grad() and calling ContributionDone, so enabling takes that use out of uses()
  // (the grad-ready hook fires after the other uses' contributions) and disabling puts it back;
  // whoever enabled it adds the rows of every rank into the reduced gradient. ZeroGrad drops them.
  void EnableRowGradients(bool on);
  bool row_gradients_enabled() const { return row_gradients_enabled_; }
  struct RowGradients {
    runtime::Tensor ids;   // i32 [N]: rows of the table; -1: none (the row is left out)
    runtime::Tensor rows;  // f32 [N, C]: their gradients, C = the table's second dimension
  };
  void AddRowGradients(runtime::Tensor ids, runtime::Tensor rows);
  const std::vector<RowGradients>& row_gradients() const { return row_gradients_; }
  void ClearRowGradients() { row_gradients_.clear(); }

 private:
  std::string name_;
  runtime::Shape global_shape_;
  ShardSpec spec_;
  runtime::Shape local_shape_;
  bool weight_decay_;
  runtime::Tensor value_;
  runtime::Tensor low_value_;
  runtime::Tensor grad_;
  int uses_ = 0;
  int contributions_ = 0;
  GradReadyHook hook_;
  Initializer initializer_;
  bool row_gradients_enabled_ = false;
  std::vector<RowGradients> row_gradients_;
};

}  // namespace loom::parallel
