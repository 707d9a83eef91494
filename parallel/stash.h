// Stash: the activations one micro-batch's backward needs, keyed by layer and slot.
//
//   Stash stash;                              // one per micro-batch in flight
//   Tensor y = block.Forward(stash, x);       // layers Put what their backward reads
//   Tensor dx = block.BackwardInput(stash, dy);
//   block.BackwardWeight(stash);              // may run later (zero-bubble schedules)
//   stash.Clear();
//
// A pipeline holds several stashes at once; a layer that recomputes keeps only its input here.
//
// Mixed precision: with SetActivationDType(bf16 / f16), Put keeps f32 activations as 16-bit
// copies (half the bytes; the f32 original is freed once the forward pass drops it) and Get
// widens them back to f32, as a 16-bit training run stores its activations. Small statistics that
// backward needs exactly (norm means, softmax maxima) go through PutExact.
#pragma once

#include <cstdint>
#include <string>
#include <utility>

#include "absl/container/flat_hash_map.h"
#include "absl/strings/string_view.h"
#include "runtime/tensor.h"

namespace loom::parallel {

class Stash {
 public:
  // Stores `t` (shallow: shares storage) under (owner, slot), replacing any previous tensor; an
  // f32 `t` is stored as a 16-bit copy when an activation dtype is set.
  void Put(const void* owner, absl::string_view slot, runtime::Tensor t);
  // As Put, but always as given (f32 statistics that must stay exact).
  void PutExact(const void* owner, absl::string_view slot, runtime::Tensor t);
  // bf16 or f16: store f32 activations in that dtype from now on; f32 (the default): as given.
  void SetActivationDType(runtime::DType dtype) { activation_dtype_ = dtype; }
  // The dtype the layers' backward GEMMs (dX, dW) take their operands in
  // (kernels::MatmulOptions::compute_dtype): bf16 under bf16 training, where the operands already
  // are bf16 values (stashed activations, working weights, gradients rounded at unit boundaries),
  // so the CPU's bf16 units change only the order of the f32 sums; f32 otherwise.
  runtime::DType GemmDType() const {
    return activation_dtype_ == runtime::DType::kBF16 ? runtime::DType::kBF16
                                                      : runtime::DType::kF32;
  }
  // Autocast: the forward GEMMs (and attention) too take their activation operands in
  // GemmDType() (bf16 under bf16 training), as PyTorch's CPU autocast does, instead of f32. Off by
  // default: rounding the forward inputs (LayerNorm, GELU and attention outputs inside a unit) to
  // bf16 moves the loss curve further from the f32 one (0.046 at one step of
  // data_parallel_test's tiny run, against 0.023 without; docs/kernels.md, "bf16").
  void SetAutocast(bool on) { autocast_ = on; }
  runtime::DType ForwardGemmDType() const { return autocast_ ? GemmDType() : runtime::DType::kF32; }
  // The activation operand of a forward GEMM whose input `x` was just Put under (owner, slot):
  // `x` itself when ForwardGemmDType() is f32, else the stored copy in that dtype (no second
  // rounding pass).
  runtime::Tensor ForwardGemmInput(const void* owner, absl::string_view slot,
                                   const runtime::Tensor& x) const;
  // The tensor under (owner, slot) (a shallow copy: later Puts cannot invalidate it; a stored
  // 16-bit copy comes back widened to a new f32 tensor); aborts naming the slot if it is missing
  // (a backward without its forward is a programmer error).
  runtime::Tensor Get(const void* owner, absl::string_view slot) const;
  // As Get, for a GEMM operand: a tensor stored in GemmDType() (a bf16 copy under bf16 training)
  // comes back as stored, without the widening round trip; anything else as Get returns it.
  runtime::Tensor GetForGemm(const void* owner, absl::string_view slot) const;
  // As Get, for kernels that read bf16 inputs themselves: a bf16 copy comes back as stored;
  // anything else as Get returns it (f32).
  runtime::Tensor GetBf16OrF32(const void* owner, absl::string_view slot) const;
  // Tokens per sequence of this micro-batch (set by the model): layers that see activations as
  // token rows (sequence parallelism, parallel/tensor/tensor_parallel.h) read how rows form
  // sequences from it. 0: not set.
  void SetSequenceLength(int64_t t) { sequence_length_ = t; }
  int64_t sequence_length() const { return sequence_length_; }
  // The factor the loss's gradient is scaled by in this micro-batch's backward (1 / micro-batches,
  // times the fp16 loss scale; set by the model before any backward): layers that add a loss term
  // of their own (the MoE layer's auxiliary balance loss) scale its gradient alike.
  void SetLossGradScale(float scale) { loss_grad_scale_ = scale; }
  float loss_grad_scale() const { return loss_grad_scale_; }
  // Auxiliary loss terms this micro-batch's forward added (for the metrics; their gradients are
  // the layers' own).
  void AddAuxLoss(double value) { aux_loss_ += value; }
  double aux_loss() const { return aux_loss_; }
  // An empty stash with this one's settings (activation dtype, autocast, sequence length), e.g.
  // for a forward pass whose activations are dropped (recompute).
  Stash EmptyLike() const;
  bool Contains(const void* owner, absl::string_view slot) const;
  void Erase(const void* owner, absl::string_view slot);
  void Clear() {
    tensors_.clear();
    aux_loss_ = 0.0;
  }

  int64_t size() const { return static_cast<int64_t>(tensors_.size()); }
  // Bytes of the stashed tensors (views count their own size).
  int64_t bytes() const;
  // The allocations behind the stashed tensors tagged MemoryTag::kActivation, each counted once
  // whole (two slots may share one, a view keeps all of its allocation): what the allocator's
  // activation accounting holds for this stash.
  int64_t activation_bytes() const;

 private:
  using Key = std::pair<const void*, std::string>;
  struct Entry {
    runtime::Tensor tensor;
    bool widen = false;  // stored narrowed from f32: Get widens it back
  };
  const Entry& Find(const void* owner, absl::string_view slot) const;
  // The entry as Get returns it: widened to f32 when it was stored narrowed.
  static runtime::Tensor WidenedIfNarrowed(const Entry& e);
  absl::flat_hash_map<Key, Entry> tensors_;
  runtime::DType activation_dtype_ = runtime::DType::kF32;
  bool autocast_ = false;
  int64_t sequence_length_ = 0;
  float loss_grad_scale_ = 1.0f;
  double aux_loss_ = 0.0;
};

}  // namespace loom::parallel
