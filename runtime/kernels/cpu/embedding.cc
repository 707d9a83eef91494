#include <cstring>

#include "runtime/kernels/cpu/cpu_kernels.h"
#include "runtime/kernels/cpu/rows.h"
#include "runtime/parallel.h"

namespace loom::runtime::kernels::cpu {

void EmbeddingForward(const Tensor& ids, const Tensor& table, Tensor& out) {
  const int64_t n = ids.numel();
  const int64_t c = table.dim(1);
  const int32_t* pid = ids.data<int32_t>();
  const float* pt = table.data<float>();
  float* po = out.data<float>();
  ParallelFor(n, RowGrain(c), [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      std::memcpy(po + i * c, pt + static_cast<int64_t>(pid[i]) * c, c * sizeof(float));
    }
  });
}

void EmbeddingBackward(const Tensor& dout, const Tensor& ids, Tensor& dtable) {
  const int64_t n = ids.numel();
  const int64_t c = dtable.dim(1);
  const int32_t* pid = ids.data<int32_t>();
  const float* pd = dout.data<float>();
  float* pt = dtable.data<float>();
  // Split by columns: repeated ids then add in position order whatever the thread count.
  ParallelFor(c, 64, [&](int64_t begin, int64_t end) {
    for (int64_t i = 0; i < n; ++i) {
      float* row = pt + static_cast<int64_t>(pid[i]) * c;
      const float* d = pd + i * c;
      for (int64_t j = begin; j < end; ++j) row[j] += d[j];
    }
  });
}

}  // namespace loom::runtime::kernels::cpu
