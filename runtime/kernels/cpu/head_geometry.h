// Where a (batch, head) lies in attention's tensors on the CPU (the fused qkv [B, T, 3C] and
// [B, T, C] rows), shared by the attention kernels' two forms (attention.cc, flash_attention.cc).
#pragma once

#include <cmath>
#include <cstdint>

#include "runtime/tensor.h"

namespace loom::runtime::kernels::cpu {

struct HeadGeometry {
  int64_t B, T, C, NH, HS;
  float scale;  // 1 / √HS

  explicit HeadGeometry(const Tensor& qkv, int64_t num_heads)
      : B(qkv.dim(0)),
        T(qkv.dim(1)),
        C(qkv.dim(2) / 3),
        NH(num_heads),
        HS(C / num_heads),
        scale(1.0f / std::sqrt(static_cast<float>(C / num_heads))) {}

  // Offset of head h's q (part 0), k (1) or v (2) in row 0 of batch b of a [B, T, 3C] tensor.
  int64_t Qkv(int64_t b, int64_t part, int64_t h) const {
    return b * T * 3 * C + part * C + h * HS;
  }
  // Offset of head h in row 0 of batch b of a [B, T, C] tensor.
  int64_t Heads(int64_t b, int64_t h) const { return b * T * C + h * HS; }
};

}  // namespace loom::runtime::kernels::cpu
