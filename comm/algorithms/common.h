// Shared vocabulary of loom's point-to-point collective algorithms (one algorithm per file in
// comm/algorithms/): the context of one call (transport, deadline, tag, segment size), how a buffer
// is cut into one block per rank, and the dtype in which partial reductions travel.
//
//   P2PContext ctx{p2p, deadline};                        // tag 0, 1 MiB segments
//   BlockLayout blocks = BlockLayout::Balanced(4099, 4);  // lengths 1025, 1025, 1025, 1024
//   BlockLayout head = blocks.Window(0, 256);             // elements [0, 256) of every block
//   LOOM_RETURN_IF_ERROR(RingAllReduce(ctx, in, out, 4099, DType::kBF16, ReduceOp::kSum));
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <vector>

#include "comm/backend.h"
#include "comm/p2p.h"
#include "comm/types.h"
#include "runtime/dtype.h"

namespace loom::comm {

// One collective call on a transport. Every rank of the transport runs the same algorithm with the
// same tag, count, dtype and segment size, in the same order relative to its other calls.
struct P2PContext {
  PointToPoint& p2p;
  Deadline deadline;
  int tag = 0;                      // every message of the call carries it
  int64_t segment_bytes = 1 << 20;  // the largest message a segmented algorithm sends
};

// One block per rank of a buffer: block b is elements [offset[b], offset[b] + length[b]).
struct BlockLayout {
  std::vector<int64_t> offset;
  std::vector<int64_t> length;

  // `count` elements in `parts` contiguous blocks; the first count % parts are one longer.
  static BlockLayout Balanced(int64_t count, int parts);
  // `parts` blocks of `block` elements each.
  static BlockLayout Uniform(int64_t block, int parts);
  // Elements [lo, lo + len) of every block, clipped to the block (possibly empty).
  BlockLayout Window(int64_t lo, int64_t len) const;
  int64_t MaxLength() const;
};

// Host scratch that grows on demand and is never zero-filled (the algorithms write every byte
// before reading it), so reusing it across segments costs no allocation and no memset.
class Scratch {
 public:
  char* Get(size_t bytes) {
    if (bytes > size_) {
      data_ = std::make_unique_for_overwrite<char[]>(bytes);
      size_ = bytes;
    }
    return data_.get();
  }

 private:
  std::unique_ptr<char[]> data_;
  size_t size_ = 0;
};

// The dtype partial reductions travel and combine in: f32 for bf16/f16 sum and avg (so a 16-bit
// result is rounded once, at the end), the dtype itself otherwise (max and min are exact).
runtime::DType AccumDType(runtime::DType dtype, ReduceOp op);
// The reduction applied before the last combination: avg sums and divides once, at the end.
ReduceOp HopOp(ReduceOp op);
// Bytes of n elements of dtype.
size_t Bytes(runtime::DType dtype, int64_t n);
// Elements of `dtype` per segment of `segment_bytes` (at least one).
int64_t SegmentElements(int64_t segment_bytes, runtime::DType dtype);
// How many segments of `segment` elements cover `length` elements; at least one, so that a
// zero-count call still exchanges (empty) messages and a missing rank is noticed in that call.
int64_t NumSegments(int64_t length, int64_t segment);
// Copies n elements from src to dst converting between dtypes (equal, or one of them f32). The
// ranges must not overlap unless src == dst and the dtypes are equal (then nothing happens).
void ConvertElements(const void* src, runtime::DType src_dtype, void* dst, runtime::DType dst_dtype,
                     int64_t n);

}  // namespace loom::comm
