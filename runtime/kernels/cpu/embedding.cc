#include <cstring>

#include "runtime/kernels/cpu/cpu_kernels.h"
#include "runtime/kernels/cpu/rows.h"
#include "runtime/parallel.h"

namespace loom::runtime::kernels::cpu {

void EmbeddingForward(const Tensor& ids, const Tensor& table, int64_t vocab_start, Tensor& out) {
  const int64_t n = ids.numel();
  const int64_t c = table.dim(1), rows = table.dim(0);
  const int32_t* pid = ids.data<int32_t>();
  const float* pt = table.data<float>();
  float* po = out.data<float>();
  ParallelFor(n, RowGrain(c), [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      const int64_t row = static_cast<int64_t>(pid[i]) - vocab_start;
      if (row >= 0 && row < rows) {
        std::memcpy(po + i * c, pt + row * c, c * sizeof(float));
      } else {
        std::memset(po + i * c, 0, c * sizeof(float));  // another shard's row
      }
    }
  });
}

void EmbeddingBackward(const Tensor& dout, const Tensor& ids, int64_t vocab_start, Tensor& dtable) {
  const int64_t n = ids.numel();
  const int64_t c = dtable.dim(1), rows = dtable.dim(0);
  const int32_t* pid = ids.data<int32_t>();
  const float* pd = dout.data<float>();
  float* pt = dtable.data<float>();
  // Split by columns: repeated ids then add in position order whatever the thread count.
  ParallelFor(c, 64, [&](int64_t begin, int64_t end) {
    for (int64_t i = 0; i < n; ++i) {
      const int64_t r = static_cast<int64_t>(pid[i]) - vocab_start;
      if (r < 0 || r >= rows) continue;  // another shard's row
      float* row = pt + r * c;
      const float* d = pd + i * c;
      for (int64_t j = begin; j < end; ++j) row[j] += d[j];
    }
  });
}

}  // namespace loom::runtime::kernels::cpu
