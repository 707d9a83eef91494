// The optimizers' updates on a flat parameter shard: AdamW (decoupled weight decay, Loshchilov &
// Hutter), with f32 master weights and an optional rounded copy for bf16/f16 compute, and SGD with
// momentum (SgdUpdate, below).
//
//   AdamWConfig cfg{.lr = 6e-4f, .beta1 = 0.9f, .beta2 = 0.95f, .eps = 1e-8f,
//                   .weight_decay = 0.1f};
//   AdamWUpdate(master, grad, m, v, cfg, /*step=*/t, &param_bf16);   // or nullptr
//
// Per element, as torch.optim.AdamW:
//   p -= lr·wd·p;  m = β1·m + (1-β1)·g;  v = β2·v + (1-β2)·g²
//   p -= lr · (m / (1-β1ᵗ)) / (√(v / (1-β2ᵗ)) + eps)
// master, grad, m, v: f32, same element count (shapes may differ, e.g. a flat shard); step t >= 1.
// copy_out, if given, receives round-to-nearest-even bf16 or f16 of the updated master weights.
// Host tensors run the CPU kernel (synchronous); CUDA tensors its registered twin (docs/gpu.md).
#pragma once

#include <cstdint>
#include <span>

#include "runtime/kernels/adamw_formula.h"
#include "runtime/tensor.h"

namespace loom::runtime::kernels {

struct AdamWConfig {
  float lr = 1e-3f;
  float beta1 = 0.9f;
  float beta2 = 0.999f;
  float eps = 1e-8f;
  float weight_decay = 0.0f;
};

void AdamWUpdate(Tensor& master, const Tensor& grad, Tensor& m, Tensor& v,
                 const AdamWConfig& config, int64_t step, Tensor* copy_out = nullptr);

// AdamW on many tensors at once (an optimizer step over every parameter): each entry updated
// exactly as AdamWUpdate(master, grad, m, v, config, step) would, with config.weight_decay where
// `decay` and none elsewhere; on a CUDA device in a few launches of one multi-tensor kernel
// instead of one per tensor (runtime/kernels/cuda/multi_tensor.h). Every tensor on one device.
struct AdamWTensors {
  Tensor master, grad, m, v;  // handles: the update writes through them
  bool decay = true;
};
void AdamWUpdateMany(std::span<const AdamWTensors> tensors, const AdamWConfig& config,
                     int64_t step);

// The constants of step `step` for the per-element update (kernels/adamw_formula.h), which the
// CPU kernel and its CUDA twin share.
AdamWStep MakeAdamWStep(const AdamWConfig& config, int64_t step);

// p -= lr · buffer with buffer = g + wd·p on the `first` step, else μ·buffer + g + wd·p
// (kernels/adamw_formula.h SgdElement, as torch.optim.SGD); param, grad and buffer f32 with one
// element count; host or device.
void SgdUpdate(Tensor& param, const Tensor& grad, Tensor& buffer, const SgdStep& step);

}  // namespace loom::runtime::kernels
