// Softmax cross-entropy, built from per-row pieces so a vocabulary-sharded version composes
// from the same kernels.
//
//   // Unsharded: losses[N] and dlogits[N, V] (accumulated) in one call.
//   CrossEntropyForwardBackward(logits, targets, dloss, losses, dlogits);
//
//   // Vocabulary-sharded (each rank holds columns [v0, v0 + V_local)):
//   CrossEntropyStats(logits, targets, v0, row_max, sum_exp, target_logit);
//   //   global_max = AllReduce(max, row_max)
//   CrossEntropyRescaleSumExp(row_max, global_max, sum_exp);   // now relative to global_max
//   //   AllReduce(sum, sum_exp); AllReduce(sum, target_logit)
//   CrossEntropyLoss(global_max, sum_exp, target_logit, losses);
//   CrossEntropyBackward(logits, targets, v0, global_max, sum_exp, dloss, dlogits);
//
// logits: f32 [N, V_local] (leading dims folded); targets: i32 [N] with global vocabulary ids;
// row statistics: f32 [N]. Host or device memory (the CUDA twins, which agree with the CPU
// within a tolerance: their exp and summation order differ). Targets outside the vocabulary fail
// at once on the host, and at the next CheckDeviceErrors on a device (elementwise.h).
#pragma once

#include <cstdint>

#include "runtime/tensor.h"

namespace loom::runtime::kernels {

// row_max[n] = max_v logits[n, v]; sum_exp[n] = Σ_v exp(logits[n, v] - row_max[n]);
// target_logit[n] = logits[n, targets[n] - vocab_start] if the target is in this shard, else 0.
void CrossEntropyStats(const Tensor& logits, const Tensor& targets, int64_t vocab_start,
                       Tensor& row_max, Tensor& sum_exp, Tensor& target_logit);

// sum_exp[n] *= exp(local_max[n] - global_max[n]): re-bases a shard's sum on the global max.
void CrossEntropyRescaleSumExp(const Tensor& local_max, const Tensor& global_max, Tensor& sum_exp);

// losses[n] = log(sum_exp[n]) + row_max[n] - target_logit[n].
void CrossEntropyLoss(const Tensor& row_max, const Tensor& sum_exp, const Tensor& target_logit,
                      Tensor& losses);

// dlogits[n, v] += dloss[n] · (exp(logits[n, v] - row_max[n]) / sum_exp[n] - [v == target]),
// with row_max and sum_exp the full-vocabulary statistics.
void CrossEntropyBackward(const Tensor& logits, const Tensor& targets, int64_t vocab_start,
                          const Tensor& row_max, const Tensor& sum_exp, const Tensor& dloss,
                          Tensor& dlogits);

// The unsharded composition of the above: writes losses[N], accumulates dlogits.
void CrossEntropyForwardBackward(const Tensor& logits, const Tensor& targets, const Tensor& dloss,
                                 Tensor& losses, Tensor& dlogits);

}  // namespace loom::runtime::kernels
