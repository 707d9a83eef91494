// Embedding lookup (token and position embeddings) and its scatter-add backward.
//
//   EmbeddingForward(ids, wte, x);        // ids: i32 [N]; wte: [V, C]; x: [N, C]
//   EmbeddingBackward(dx, ids, dwte);     // dwte[ids[n]] += dx[n]
//
//   // Vocabulary-sharded: this rank's table holds rows [v0, v0 + V_local) of the whole one.
//   EmbeddingShardForward(ids, wte_local, v0, x);    // other ids give zero rows (then all-reduce)
//   EmbeddingShardBackward(dx, ids, v0, dwte_local); // only this shard's rows
//
// ids may have any shape with N elements (x is then [..., C] with the same leading shape).
// Out-of-range ids abort naming the position and the id (negative ones, for the shard versions):
// at once on the host, at the next CheckDeviceErrors on a device (elementwise.h), where their
// rows read as zeros meanwhile. f32, host or device memory; the backward adds rows in index order
// per column (on the device too), so it is deterministic for any thread count.
#pragma once

#include <cstdint>

#include "runtime/tensor.h"

namespace loom::runtime::kernels {

void EmbeddingForward(const Tensor& ids, const Tensor& table, Tensor& out);
void EmbeddingBackward(const Tensor& dout, const Tensor& ids, Tensor& dtable);
void EmbeddingShardForward(const Tensor& ids, const Tensor& table, int64_t vocab_start,
                           Tensor& out);
void EmbeddingShardBackward(const Tensor& dout, const Tensor& ids, int64_t vocab_start,
                            Tensor& dtable);

}  // namespace loom::runtime::kernels
