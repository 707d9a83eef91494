#include "comm/shm/shm_reduce.h"

#include <algorithm>
#include <bit>
#include <cstring>

#if defined(__SSE2__)
#include <emmintrin.h>
#endif

#include "runtime/base/check.h"

namespace loom::comm {
namespace {

using runtime::DType;

// A block of elements is reduced into an accumulator on the stack (L1) and then stored, so
// outputs may alias inputs and the loops over the accumulator vectorise (it aliases nothing).
constexpr int64_t kBlock = 1024;

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define LOOM_MULTIVERSION __attribute__((target_clones("avx512f", "avx2", "default")))
#else
#define LOOM_MULTIVERSION
#endif
#define LOOM_INLINE inline __attribute__((always_inline))

template <typename A>
LOOM_INLINE void Combine(ReduceOp op, A* __restrict acc, const A* __restrict in, int64_t n) {
  switch (op) {
    case ReduceOp::kSum:
    case ReduceOp::kAvg:
      for (int64_t i = 0; i < n; ++i) acc[i] += in[i];
      return;
    case ReduceOp::kMax:
      for (int64_t i = 0; i < n; ++i) acc[i] = acc[i] < in[i] ? in[i] : acc[i];
      return;
    case ReduceOp::kMin:
      for (int64_t i = 0; i < n; ++i) acc[i] = in[i] < acc[i] ? in[i] : acc[i];
      return;
  }
}

// acc = a op b in one pass (saves a store and a load of the accumulator).
template <typename A>
LOOM_INLINE void Combine2(ReduceOp op, A* __restrict acc, const A* a, const A* b, int64_t n) {
  switch (op) {
    case ReduceOp::kSum:
    case ReduceOp::kAvg:
      for (int64_t i = 0; i < n; ++i) acc[i] = a[i] + b[i];
      return;
    case ReduceOp::kMax:
      for (int64_t i = 0; i < n; ++i) acc[i] = a[i] < b[i] ? b[i] : a[i];
      return;
    case ReduceOp::kMin:
      for (int64_t i = 0; i < n; ++i) acc[i] = b[i] < a[i] ? b[i] : a[i];
      return;
  }
}

// std::max/min semantics of ReduceBuffers: max(a, b) = a < b ? b : a; min(a, b) = b < a ? b : a.
// (Equal for all non-NaN inputs; the expressions above are the same ones.)

// Non-temporal stores: the written lines go to memory without being read first and without
// evicting what the next steps reuse (for outputs larger than the last-level cache).
LOOM_INLINE void StreamBytes(char* dst, const char* src, size_t bytes) {
#if defined(__SSE2__)
  size_t i = 0;
  const size_t head = (16 - reinterpret_cast<uintptr_t>(dst) % 16) % 16;
  for (; i < head && i < bytes; ++i) dst[i] = src[i];
  for (; i + 16 <= bytes; i += 16) {
    _mm_stream_si128(reinterpret_cast<__m128i*>(dst + i),
                     _mm_loadu_si128(reinterpret_cast<const __m128i*>(src + i)));
  }
  for (; i < bytes; ++i) dst[i] = src[i];
#else
  std::memcpy(dst, src, bytes);
#endif
}

LOOM_INLINE void StreamFence() {
#if defined(__SSE2__)
  _mm_sfence();
#endif
}

// A plain loop rather than memcpy: libc's copy of a few KiB goes through `rep movsb`, which is
// slow on some CPUs (AMD Zen under a hypervisor: ~2x slower than vector moves here).
template <typename T>
LOOM_INLINE void Store(T* out, const T* __restrict acc, int64_t n, bool stream) {
  if (stream) {
    StreamBytes(reinterpret_cast<char*>(out), reinterpret_cast<const char*>(acc), n * sizeof(T));
    return;
  }
  for (int64_t i = 0; i < n; ++i) out[i] = acc[i];
}

template <typename T>
LOOM_INLINE void NativeKernel(ReduceOp op, const void* const* inputs, int k, void* out_raw,
                              void* out2_raw, int64_t n, int divisor, bool stream, bool stream2) {
  T acc[kBlock];
  T* out = static_cast<T*>(out_raw);
  T* out2 = static_cast<T*>(out2_raw);
  for (int64_t b = 0; b < n; b += kBlock) {
    const int64_t len = std::min(kBlock, n - b);
    const T* first = static_cast<const T*>(inputs[0]) + b;
    if (k == 1) {
      std::memcpy(acc, first, len * sizeof(T));
    } else {
      Combine2<T>(op, acc, first, static_cast<const T*>(inputs[1]) + b, len);
      for (int j = 2; j < k; ++j) Combine<T>(op, acc, static_cast<const T*>(inputs[j]) + b, len);
    }
    if (op == ReduceOp::kAvg) {
      const T d = static_cast<T>(divisor);
      for (int64_t i = 0; i < len; ++i) acc[i] /= d;
    }
    Store<T>(out + b, acc, len, stream);
    if (out2 != nullptr) Store<T>(out2 + b, acc, len, stream2);
  }
  if (stream || stream2) StreamFence();
}

LOOM_INLINE float Bf16ToF32(uint16_t h) {
  return std::bit_cast<float>(static_cast<uint32_t>(h) << 16);
}

// runtime::F32ToBF16, written so it vectorises: round to nearest even, NaN kept quiet.
LOOM_INLINE uint16_t F32ToBf16(float x) {
  const uint32_t bits = std::bit_cast<uint32_t>(x);
  const uint32_t rounded = (bits + 0x7FFFu + ((bits >> 16) & 1u)) >> 16;
  const uint32_t nan = (bits >> 16) | 0x0040u;
  return static_cast<uint16_t>((bits & 0x7FFFFFFFu) > 0x7F800000u ? nan : rounded);
}

LOOM_INLINE void WidenBf16(const uint16_t* __restrict in, float* __restrict out, int64_t n) {
  for (int64_t i = 0; i < n; ++i) out[i] = Bf16ToF32(in[i]);
}

LOOM_INLINE void NarrowBf16(const float* __restrict in, uint16_t* __restrict out, int64_t n) {
  for (int64_t i = 0; i < n; ++i) out[i] = F32ToBf16(in[i]);
}

// 16-bit floats: widen to f32 blocks, accumulate, round once.
LOOM_INLINE void HalfKernel(DType dtype, ReduceOp op, const void* const* inputs, int k, void* out,
                            void* out2, int64_t n, int divisor, bool stream, bool stream2) {
  float acc[kBlock];
  float tmp[kBlock];
  uint16_t narrow[kBlock];
  const bool bf16 = dtype == DType::kBF16;
  auto widen = [&](const void* src, int64_t b, float* dst, int64_t len) {
    const uint16_t* s = static_cast<const uint16_t*>(src) + b;
    if (bf16) {
      WidenBf16(s, dst, len);
    } else {
      runtime::ConvertBuffer(s, DType::kF16, dst, DType::kF32, len);
    }
  };
  for (int64_t b = 0; b < n; b += kBlock) {
    const int64_t len = std::min(kBlock, n - b);
    widen(inputs[0], b, acc, len);
    for (int j = 1; j < k; ++j) {
      widen(inputs[j], b, tmp, len);
      Combine<float>(op, acc, tmp, len);
    }
    if (op == ReduceOp::kAvg) {
      const float d = static_cast<float>(divisor);
      for (int64_t i = 0; i < len; ++i) acc[i] /= d;
    }
    if (bf16) {
      NarrowBf16(acc, narrow, len);
    } else {
      runtime::ConvertBuffer(acc, DType::kF32, narrow, DType::kF16, len);
    }
    Store<uint16_t>(static_cast<uint16_t*>(out) + b, narrow, len, stream);
    if (out2 != nullptr) Store<uint16_t>(static_cast<uint16_t*>(out2) + b, narrow, len, stream2);
  }
  if (stream || stream2) StreamFence();
}

LOOM_MULTIVERSION void ReduceF32(ReduceOp op, const void* const* in, int k, void* out, void* out2,
                                 int64_t n, int divisor, bool stream, bool stream2) {
  NativeKernel<float>(op, in, k, out, out2, n, divisor, stream, stream2);
}
LOOM_MULTIVERSION void ReduceI32(ReduceOp op, const void* const* in, int k, void* out, void* out2,
                                 int64_t n, int divisor, bool stream, bool stream2) {
  NativeKernel<int32_t>(op, in, k, out, out2, n, divisor, stream, stream2);
}
LOOM_MULTIVERSION void ReduceI64(ReduceOp op, const void* const* in, int k, void* out, void* out2,
                                 int64_t n, int divisor, bool stream, bool stream2) {
  NativeKernel<int64_t>(op, in, k, out, out2, n, divisor, stream, stream2);
}
LOOM_MULTIVERSION void ReduceHalf(DType dtype, ReduceOp op, const void* const* in, int k, void* out,
                                  void* out2, int64_t n, int divisor, bool stream, bool stream2) {
  HalfKernel(dtype, op, in, k, out, out2, n, divisor, stream, stream2);
}

LOOM_MULTIVERSION void CopyVectors(char* __restrict dst, const char* __restrict src, size_t bytes) {
  size_t i = 0;
  for (; i + 64 <= bytes; i += 64) {
    char v[64];
    __builtin_memcpy(v, src + i, 64);
    __builtin_memcpy(dst + i, v, 64);
  }
  for (; i < bytes; ++i) dst[i] = src[i];
}

LOOM_MULTIVERSION void CopyVectors2(char* __restrict dst, char* __restrict dst2,
                                    const char* __restrict src, size_t bytes) {
  size_t i = 0;
  for (; i + 64 <= bytes; i += 64) {
    char v[64];
    __builtin_memcpy(v, src + i, 64);
    __builtin_memcpy(dst + i, v, 64);
    __builtin_memcpy(dst2 + i, v, 64);
  }
  for (; i < bytes; ++i) dst[i] = dst2[i] = src[i];
}

// Block by block (in L1): non-temporal into dst, plain into dst2.
void CopyStream2(char* dst, char* dst2, const char* src, size_t bytes) {
  constexpr size_t kPiece = 16 << 10;
  for (size_t i = 0; i < bytes; i += kPiece) {
    const size_t len = std::min(kPiece, bytes - i);
    StreamBytes(dst + i, src + i, len);
    CopyVectors(dst2 + i, src + i, len);
  }
  StreamFence();
}

}  // namespace

void CopyFast2(void* dst, void* dst2, const void* src, size_t bytes, bool stream) {
  if (stream) {
    CopyStream2(static_cast<char*>(dst), static_cast<char*>(dst2), static_cast<const char*>(src),
                bytes);
    return;
  }
  CopyVectors2(static_cast<char*>(dst), static_cast<char*>(dst2), static_cast<const char*>(src),
               bytes);
}

void CopyFast(void* dst, const void* src, size_t bytes, bool stream) {
  if (stream) {
    StreamBytes(static_cast<char*>(dst), static_cast<const char*>(src), bytes);
    StreamFence();
    return;
  }
  if (bytes < 256) {
    std::memcpy(dst, src, bytes);
    return;
  }
  CopyVectors(static_cast<char*>(dst), static_cast<const char*>(src), bytes);
}

void ReduceInto(DType dtype, ReduceOp op, const void* const* inputs, int num_inputs, void* out,
                void* out2, int64_t n, int avg_divisor, bool stream_out, bool stream_out2) {
  LOOM_CHECK_GE(num_inputs, 1) << "ReduceInto needs an input";
  if (n <= 0) return;
  switch (dtype) {
    case DType::kF32:
      return ReduceF32(op, inputs, num_inputs, out, out2, n, avg_divisor, stream_out, stream_out2);
    case DType::kI32:
      return ReduceI32(op, inputs, num_inputs, out, out2, n, avg_divisor, stream_out, stream_out2);
    case DType::kI64:
      return ReduceI64(op, inputs, num_inputs, out, out2, n, avg_divisor, stream_out, stream_out2);
    case DType::kBF16:
    case DType::kF16:
      return ReduceHalf(dtype, op, inputs, num_inputs, out, out2, n, avg_divisor, stream_out,
                        stream_out2);
    default:
      LOOM_CHECK(false) << "ReduceInto: unsupported dtype " << dtype;
  }
}

}  // namespace loom::comm
