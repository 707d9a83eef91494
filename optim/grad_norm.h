// Global gradient norm and clipping.
//
//   double norm = GlobalGradNorm(grads);          // √(Σ over all tensors of Σ g²)
//   double pre = ClipGradNorm(grads, /*max_norm=*/1.0);   // scales all grads if norm > max_norm
//
// Sums of squares are accumulated in double in a fixed order, so the norm is reproducible for a
// given set of tensors whatever the thread count. Sharded gradients (ZeRO, TP) sum their local
// SumOfSquares across ranks before the square root (DataParallel::ClipGradNorm uses ClipFactor).
// f32 grads, host.
#pragma once

#include <vector>

#include "runtime/tensor.h"

namespace loom::optim {

double GlobalGradNorm(const std::vector<runtime::Tensor>& grads);
// Returns the norm before clipping; multiplies every grad by max_norm / norm when norm > max_norm
// (max_norm <= 0 disables clipping). A non-finite norm leaves grads untouched.
double ClipGradNorm(const std::vector<runtime::Tensor>& grads, double max_norm);
// The factor ClipGradNorm scales by for a given norm: max_norm / norm when max_norm > 0 and the
// finite norm exceeds it, else 1.
double ClipFactor(double norm, double max_norm);

}  // namespace loom::optim
