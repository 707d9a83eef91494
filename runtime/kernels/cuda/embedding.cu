// Embedding lookups on the device (the CPU's runtime/kernels/cpu/embedding.cc). Rows outside the
// table (another vocabulary shard's, or an id that CheckIndices has recorded) read as zeros and
// receive no gradient, so a bad id never touches memory outside the table.
#include "runtime/kernels/cuda/cuda_kernels.h"
#include "runtime/kernels/cuda/launch.h"

namespace loom::runtime::kernels::cuda {
namespace {

// The table row position i reads, or -1 when it is not in this table.
__device__ int64_t RowOf(const EmbeddingArgs& a, int64_t i) {
  const int64_t row = static_cast<int64_t>(a.ids[i]) - a.vocab_start;
  return row >= 0 && row < a.table_rows ? row : -1;
}

__global__ void EmbeddingForwardKernel(EmbeddingArgs a, const float* table, float* out) {
  const int64_t n = a.n * a.cols;
  for (int64_t e = FirstIndex(blockIdx.x, blockDim.x, threadIdx.x); e < n;
       e += Stride(gridDim.x, blockDim.x)) {
    const int64_t i = e / a.cols, j = e % a.cols;
    const int64_t row = RowOf(a, i);
    out[e] = row >= 0 ? table[row * a.cols + j] : 0.0f;
  }
}

// One thread per column: positions in order, as the CPU adds repeated ids.
__global__ void EmbeddingBackwardKernel(EmbeddingArgs a, const float* dout, float* dtable) {
  for (int64_t j = FirstIndex(blockIdx.x, blockDim.x, threadIdx.x); j < a.cols;
       j += Stride(gridDim.x, blockDim.x)) {
    for (int64_t i = 0; i < a.n; ++i) {
      const int64_t row = RowOf(a, i);
      if (row >= 0) dtable[row * a.cols + j] += dout[i * a.cols + j];
    }
  }
}

}  // namespace

void EmbeddingForward(const EmbeddingArgs& args, const float* table, float* out, Stream stream) {
  const Grid g = GridFor(args.n * args.cols);
  if (g.blocks > 0) EmbeddingForwardKernel<<<g.blocks, g.threads, 0, stream>>>(args, table, out);
}

void EmbeddingBackward(const EmbeddingArgs& args, const float* dout, float* dtable, Stream stream) {
  const Grid g = GridFor(args.cols);
  if (g.blocks > 0 && args.n > 0) {
    EmbeddingBackwardKernel<<<g.blocks, g.threads, 0, stream>>>(args, dout, dtable);
  }
}

}  // namespace loom::runtime::kernels::cuda
