#include "comm/algorithms/common.h"

#include <algorithm>
#include <cstring>

#include "runtime/base/check.h"

namespace loom::comm {

using runtime::DType;

BlockLayout BlockLayout::Balanced(int64_t count, int parts) {
  LOOM_CHECK_GE(parts, 1) << "BlockLayout::Balanced";
  BlockLayout b;
  const int64_t base = count / parts, extra = count % parts;
  int64_t at = 0;
  for (int p = 0; p < parts; ++p) {
    const int64_t len = base + (p < extra ? 1 : 0);
    b.offset.push_back(at);
    b.length.push_back(len);
    at += len;
  }
  return b;
}

BlockLayout BlockLayout::Uniform(int64_t block, int parts) {
  BlockLayout b;
  for (int p = 0; p < parts; ++p) {
    b.offset.push_back(p * block);
    b.length.push_back(block);
  }
  return b;
}

BlockLayout BlockLayout::Window(int64_t lo, int64_t len) const {
  BlockLayout w;
  for (size_t b = 0; b < offset.size(); ++b) {
    const int64_t start = std::min(lo, length[b]);
    w.offset.push_back(offset[b] + start);
    w.length.push_back(std::clamp<int64_t>(length[b] - lo, 0, len));
  }
  return w;
}

int64_t BlockLayout::MaxLength() const {
  int64_t m = 0;
  for (int64_t l : length) m = std::max(m, l);
  return m;
}

DType AccumDType(DType dtype, ReduceOp op) {
  const bool half = dtype == DType::kBF16 || dtype == DType::kF16;
  return half && (op == ReduceOp::kSum || op == ReduceOp::kAvg) ? DType::kF32 : dtype;
}

ReduceOp HopOp(ReduceOp op) { return op == ReduceOp::kAvg ? ReduceOp::kSum : op; }

size_t Bytes(DType dtype, int64_t n) { return static_cast<size_t>(n) * runtime::DTypeSize(dtype); }

int64_t SegmentElements(int64_t segment_bytes, DType dtype) {
  return std::max<int64_t>(1, segment_bytes / static_cast<int64_t>(runtime::DTypeSize(dtype)));
}

int64_t NumSegments(int64_t length, int64_t segment) {
  return std::max<int64_t>(1, (length + segment - 1) / segment);
}

void ConvertElements(const void* src, DType src_dtype, void* dst, DType dst_dtype, int64_t n) {
  if (n == 0) return;
  if (src_dtype == dst_dtype) {
    if (src != dst) std::memcpy(dst, src, Bytes(src_dtype, n));
    return;
  }
  runtime::ConvertBuffer(src, src_dtype, dst, dst_dtype, n);
}

}  // namespace loom::comm
