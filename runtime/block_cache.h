// BlockCache: freed host blocks kept for reuse by size, so a training step that allocates the same
// tensors every step gets them back without a trip to the C library, fresh pages or page faults.
// The Allocator owns one; its per-tag accounting counts what is in use, and the cache is reported
// apart (Allocator::Summary: "cached 212.0 MiB").
//
//   BlockCache cache(/*capacity_bytes=*/1 << 30);
//   void* p = cache.Take(65536);          // nullptr: nothing of that size is cached
//   if (!cache.Give(p, 65536)) std::free(p);   // false: not kept (small, or over capacity)
//
// Blocks match by exact size (sizes repeat exactly from step to step). When a new block would
// exceed the capacity, the oldest cached blocks are freed first. Thread-safe.
//
// Stream-ordered reuse: a block that queued device work (or another thread) may still read or
// write is given with fences (GiveAfter) and kept apart, never handed out, until every fence
// reports done; then it is cached (or released) like any other. Fences are polled by GiveAfter,
// Take and Release, never waited on: no host synchronisation.
//
//   cache.GiveAfter(p, bytes, {[event] { return event->Done(); }});
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <functional>
#include <list>
#include <mutex>
#include <vector>

#include "absl/container/flat_hash_map.h"

namespace loom::runtime {

struct BlockCacheStats {
  int64_t cached_bytes = 0;   // held for reuse now
  int64_t pending_bytes = 0;  // given with fences not all done yet (GiveAfter)
  int64_t hits = 0;           // Take calls served from the cache
  int64_t misses = 0;         // Take calls of a cacheable size that found nothing
};

class BlockCache {
 public:
  // Blocks smaller than this go straight back to the C library (malloc keeps its own small bins).
  static constexpr size_t kMinBlockBytes = 64 * 1024;

  // `release` returns a block to where it came from when the cache lets it go (std::free for host
  // blocks from std::aligned_alloc; a device allocator's cudaFree).
  using ReleaseFn = void (*)(void*);
  explicit BlockCache(int64_t capacity_bytes, ReleaseFn release = std::free)
      : capacity_(capacity_bytes), release_(release) {}
  ~BlockCache();
  BlockCache(const BlockCache&) = delete;
  BlockCache& operator=(const BlockCache&) = delete;

  // A cached block of exactly `bytes`, or nullptr.
  void* Take(size_t bytes);
  // Keeps `block` (`bytes` long, to be released with the cache's ReleaseFn) for reuse; false when
  // it is not kept and the caller frees it.
  bool Give(void* block, size_t bytes);
  // Whether the work a fence stands for is done (polled, never waited on).
  using Fence = std::function<bool()>;
  // Takes `block` over once every fence is done: until then neither handed out nor released;
  // then kept as by Give, or released. Any size, any capacity.
  void GiveAfter(void* block, size_t bytes, std::vector<Fence> fences);
  // Frees every cached block (the Allocator calls it before reporting out of memory); pending
  // blocks whose fences are done are freed too, the others stay pending. The destructor releases
  // pending blocks as well (a device allocator's release, cudaFree, waits for the device).
  void Release();

  BlockCacheStats Stats() const;
  int64_t capacity() const { return capacity_; }

 private:
  struct Block {
    void* ptr;
    size_t bytes;
  };
  struct Pending {
    Block block;
    std::vector<Fence> fences;
  };
  void EvictOldestLocked();
  // Caches (or releases) the pending blocks whose fences are all done.
  void SettleLocked();
  bool KeepLocked(const Block& block);

  const int64_t capacity_;
  const ReleaseFn release_;
  mutable std::mutex mu_;
  std::list<Block> fifo_;  // oldest first
  std::vector<Pending> pending_;
  absl::flat_hash_map<size_t, std::vector<std::list<Block>::iterator>> by_size_;
  BlockCacheStats stats_;
};

}  // namespace loom::runtime
