// CPU memory with accounting per purpose. Every allocation carries a MemoryTag; current and peak
// bytes per tag are what ZeRO, recompute and the planner are checked against (bytes, not time).
//
//   Allocator& a = Allocator::Default();
//   void* p = a.Allocate(1 << 20, MemoryTag::kGrad);   // 64-byte aligned
//   a.Stats(MemoryTag::kGrad).current_bytes;            // 1 MiB
//   a.Free(p, 1 << 20, MemoryTag::kGrad);
//
// Tensors allocate through an Allocator (Tensor::Empty); most code never calls it directly. Tests
// and the `local` communicator backend (ranks as threads) create one Allocator per rank.
//
// Freed blocks of 64 KiB and more are kept for reuse (a BlockCache, LOOM_HOST_CACHE_BYTES,
// default 2 GiB, 0 turns it off), so a training step that allocates the same tensors every step
// does not fault in fresh pages. The per-tag figures count what is in use; the cache is reported
// apart (CacheStats, Summary).
#pragma once

#include <array>
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "absl/strings/string_view.h"
#include "runtime/block_cache.h"

namespace loom::runtime {

enum class MemoryTag : uint8_t {
  kParam,
  kGrad,
  kOptimizer,
  kActivation,
  kComm,
  kWorkspace,
};
inline constexpr int kNumMemoryTags = 6;
absl::string_view MemoryTagName(MemoryTag tag);  // "param", "grad", ...

struct MemoryStats {
  int64_t current_bytes = 0;
  int64_t peak_bytes = 0;
  int64_t allocations = 0;    // number of live allocations
  int64_t largest_bytes = 0;  // the largest single allocation since the last ResetPeaks
};

inline constexpr size_t kAllocationAlignment = 64;

// Where memory lives (runtime/tensor.h: a tensor's device is its allocator's).
enum class Device : uint8_t { kCpu, kCuda };

// Where an Allocator's memory comes from: host memory by default, or a device's (the CUDA
// backend's device allocator, runtime/kernels/cuda/device.h). The accounting and the cache are the
// same whatever the source.
struct MemorySource {
  const char* name;  // in messages: "out of host memory"
  void* (*allocate)(
      size_t bytes);  // `bytes` a multiple of kAllocationAlignment; nullptr: none left
  void (*release)(void* ptr);
  Device device = Device::kCpu;
  // Moving bytes for memory the host cannot address (nullptr for host memory: memcpy and memset):
  // `copy` between this source's memory and the host's or within it (either side may be this
  // source's), `set` every byte of a block to `byte`. Both complete before they return.
  void (*copy)(void* dst, const void* src, size_t bytes) = nullptr;
  void (*set)(void* ptr, int byte, size_t bytes) = nullptr;
  static MemorySource Host();  // std::aligned_alloc (64 bytes) and std::free
};

// Thread-safe. Counts the bytes requested (not the rounded-up size) so figures match formulas.
class Allocator {
 public:
  // Cache capacity from LOOM_HOST_CACHE_BYTES (default kDefaultCacheBytes; 0: no cache).
  Allocator();
  explicit Allocator(int64_t cache_bytes, MemorySource source = MemorySource::Host())
      : source_(source), cache_(cache_bytes, source.release) {}
  virtual ~Allocator() = default;
  static constexpr int64_t kDefaultCacheBytes = int64_t{2} << 30;
  // A cache capacity from the environment `variable` (a byte count >= 0), else `default_bytes`.
  static int64_t CacheBytesFromEnv(const char* variable, int64_t default_bytes);
  Allocator(const Allocator&) = delete;
  Allocator& operator=(const Allocator&) = delete;

  // The process-wide CPU allocator.
  static Allocator& Default();
  // Where tensors allocated without an allocator go on this thread: the innermost
  // AllocatorScope's, else Default().
  static Allocator& Current();

  // Returns 64-byte aligned host memory of `bytes` bytes (nullptr for 0 bytes), not initialised.
  // Aborts with a message naming the tag and size if the system is out of memory.
  // Subclasses (e.g. a communicator's shared-memory arena) take memory from elsewhere and count
  // it with Record / Unrecord.
  virtual void* Allocate(size_t bytes, MemoryTag tag);
  // `bytes` and `tag` must be those given to Allocate.
  virtual void Free(void* ptr, size_t bytes, MemoryTag tag);
  // Free for memory that queued device work (or another thread) may still use: the tag stops
  // counting it now, and the block is reused or released only once every fence is done
  // (BlockCache::GiveAfter; CacheStats().pending_bytes until then). Subclasses that take memory
  // from elsewhere override it with Free.
  virtual void FreeAfter(void* ptr, size_t bytes, MemoryTag tag,
                         std::vector<BlockCache::Fence> fences);

  Device device() const { return source_.device; }
  const MemorySource& source() const { return source_; }
  MemoryStats Stats(MemoryTag tag) const;
  int64_t TotalCurrentBytes() const;
  // Bytes held for reuse and the cache's hit counts (not part of any tag's figures).
  BlockCacheStats CacheStats() const { return cache_.Stats(); }
  // Sets every tag's peak to its current value and forgets its largest allocation (start of a
  // measured region).
  void ResetPeaks();
  // One line: "param 1.50 MiB (peak 1.50 MiB), grad ..., cached 12.00 MiB".
  std::string Summary() const;

  // The accounting of an allocation of `bytes` with `tag` (current, peak, count), and its undoing,
  // for allocators that hand out memory from elsewhere (a communicator's shared arena counts its
  // tensors here, in the process's default allocator, so per-tag figures stay complete).
  void Record(size_t bytes, MemoryTag tag);
  void Unrecord(size_t bytes, MemoryTag tag);

 private:
  struct Counter {
    std::atomic<int64_t> current{0};
    std::atomic<int64_t> peak{0};
    std::atomic<int64_t> allocations{0};
    std::atomic<int64_t> largest{0};
  };
  std::array<Counter, kNumMemoryTags> counters_;
  const MemorySource source_;
  BlockCache cache_;
};

// Makes `allocator` this thread's Allocator::Current() until the scope ends (scopes nest): code
// that allocates its tensors without naming an allocator, such as the layers, then allocates
// there, e.g. on a CUDA device.
//
//   AllocatorScope on_device(&cuda::DeviceAllocator());
//   Tensor y = model.Forward(stash, x);   // activations on the device
class AllocatorScope {
 public:
  explicit AllocatorScope(Allocator* allocator);
  ~AllocatorScope();
  AllocatorScope(const AllocatorScope&) = delete;
  AllocatorScope& operator=(const AllocatorScope&) = delete;

 private:
  Allocator* previous_;
};

}  // namespace loom::runtime
