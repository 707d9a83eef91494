// Embedding lookup (token and position embeddings) and its scatter-add backward.
//
//   EmbeddingForward(ids, wte, x);        // ids: i32 [N]; wte: [V, C]; x: [N, C]
//   EmbeddingBackward(dx, ids, dwte);     // dwte[ids[n]] += dx[n]
//
// ids may have any shape with N elements (x is then [..., C] with the same leading shape).
// Out-of-range ids abort naming the position and the id. f32, host memory, synchronous; the
// backward adds rows in index order per column, so it is deterministic for any thread count.
#pragma once

#include "runtime/tensor.h"

namespace loom::runtime::kernels {

void EmbeddingForward(const Tensor& ids, const Tensor& table, Tensor& out);
void EmbeddingBackward(const Tensor& dout, const Tensor& ids, Tensor& dtable);

}  // namespace loom::runtime::kernels
