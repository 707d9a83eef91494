// Embedding lookups on the device (the CPU's runtime/kernels/cpu/embedding.cc). Rows outside the
// table (another vocabulary shard's, or an id that CheckIndices has recorded) read as zeros and
// receive no gradient, so a bad id never touches memory outside the table. The backward sorts
// the positions by row (CUB's stable radix sort) and gives each row's run to one block, so rows
// are summed in parallel and each in position order, as the CPU sums them.
#include <cub/device/device_radix_sort.cuh>

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

// Keys for the sort: the row each position adds into, or table_rows (sorted last, skipped) when
// it is not in this table; values: the positions.
__global__ void SortKeysKernel(EmbeddingArgs a, uint32_t* rows, int32_t* positions) {
  for (int64_t i = FirstIndex(blockIdx.x, blockDim.x, threadIdx.x); i < a.n;
       i += Stride(gridDim.x, blockDim.x)) {
    const int64_t row = RowOf(a, i);
    rows[i] = static_cast<uint32_t>(row >= 0 ? row : a.table_rows);
    positions[i] = static_cast<int32_t>(i);
  }
}

// After the stable sort by row: each run of equal rows is one row's positions in order. The block
// at a run's first element adds them into that row, its threads over the columns, each column
// in position order from the row's current value: the CPU's sums, bit for bit.
__global__ void AddRunsKernel(EmbeddingArgs a, const uint32_t* rows, const int32_t* positions,
                              const float* dout, float* dtable) {
  for (int64_t s = blockIdx.x; s < a.n; s += gridDim.x) {
    const uint32_t row = rows[s];
    if (row == static_cast<uint32_t>(a.table_rows) || (s > 0 && rows[s - 1] == row)) continue;
    int64_t end = s + 1;
    while (end < a.n && rows[end] == row) ++end;
    for (int64_t j = threadIdx.x; j < a.cols; j += blockDim.x) {
      float acc = dtable[static_cast<int64_t>(row) * a.cols + j];
      for (int64_t p = s; p < end; ++p)
        acc += dout[static_cast<int64_t>(positions[p]) * a.cols + j];
      dtable[static_cast<int64_t>(row) * a.cols + j] = acc;
    }
  }
}

// Bits the sort needs for keys 0..table_rows.
int KeyBits(int64_t table_rows) {
  int bits = 1;
  while ((int64_t{1} << bits) <= table_rows) ++bits;
  return bits;
}

// Scratch layout: rows in / out, positions in / out (n each, 256-byte aligned), then CUB's.
struct BackwardScratch {
  uint32_t *rows_in, *rows_out;
  int32_t *positions_in, *positions_out;
  void* sort;
  size_t sort_bytes;
};

size_t Aligned(size_t bytes) { return (bytes + 255) / 256 * 256; }

size_t SortBytes(const EmbeddingArgs& a) {
  size_t bytes = 0;
  cub::DeviceRadixSort::SortPairs(
      nullptr, bytes, static_cast<const uint32_t*>(nullptr), static_cast<uint32_t*>(nullptr),
      static_cast<const int32_t*>(nullptr), static_cast<int32_t*>(nullptr), static_cast<int>(a.n),
      0, KeyBits(a.table_rows));
  return bytes;
}

BackwardScratch Carve(const EmbeddingArgs& a, void* scratch) {
  char* p = static_cast<char*>(scratch);
  const size_t keys = Aligned(static_cast<size_t>(a.n) * 4);
  return {reinterpret_cast<uint32_t*>(p),
          reinterpret_cast<uint32_t*>(p + keys),
          reinterpret_cast<int32_t*>(p + 2 * keys),
          reinterpret_cast<int32_t*>(p + 3 * keys),
          p + 4 * keys,
          SortBytes(a)};
}

}  // namespace

void EmbeddingForward(const EmbeddingArgs& args, const float* table, float* out, Stream stream) {
  const Grid g = GridFor(args.n * args.cols);
  if (g.blocks > 0) EmbeddingForwardKernel<<<g.blocks, g.threads, 0, stream>>>(args, table, out);
}

size_t EmbeddingBackwardScratchBytes(const EmbeddingArgs& args) {
  if (args.n == 0) return 0;
  return 4 * Aligned(static_cast<size_t>(args.n) * 4) + SortBytes(args);
}

void EmbeddingBackward(const EmbeddingArgs& args, const float* dout, float* dtable, void* scratch,
                       Stream stream) {
  if (args.n == 0 || args.cols == 0) return;
  const BackwardScratch s = Carve(args, scratch);
  const Grid g = GridFor(args.n);
  SortKeysKernel<<<g.blocks, g.threads, 0, stream>>>(args, s.rows_in, s.positions_in);
  size_t bytes = s.sort_bytes;
  cub::DeviceRadixSort::SortPairs(s.sort, bytes, s.rows_in, s.rows_out, s.positions_in,
                                  s.positions_out, static_cast<int>(args.n), 0,
                                  KeyBits(args.table_rows), static_cast<cudaStream_t>(stream));
  AddRunsKernel<<<RowBlocks(args.n), kBlock, 0, stream>>>(args, s.rows_out, s.positions_out, dout,
                                                          dtable);
}

}  // namespace loom::runtime::kernels::cuda
