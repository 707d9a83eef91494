// BlockCache and the Allocator's use of it: freed blocks come back for the same size, the cache
// never holds more than its capacity (oldest evicted first), small blocks are never kept, the
// per-tag accounting counts only what is in use, and blocks freed with fences (stream-ordered
// reuse) wait for them.
#include "runtime/block_cache.h"

#include <gtest/gtest.h>

#include <cstdlib>
#include <cstring>

#include "runtime/allocator.h"
#include "runtime/tensor.h"

namespace loom::runtime {
namespace {

constexpr size_t kBlock = 1 << 20;

void* NewBlock(size_t bytes) { return std::aligned_alloc(64, bytes); }

TEST(BlockCacheTest, SameSizeComesBackOthersDoNot) {
  BlockCache cache(8 * kBlock);
  EXPECT_EQ(cache.Take(kBlock), nullptr);
  void* p = NewBlock(kBlock);
  ASSERT_TRUE(cache.Give(p, kBlock));
  EXPECT_EQ(cache.Stats().cached_bytes, static_cast<int64_t>(kBlock));
  EXPECT_EQ(cache.Take(2 * kBlock), nullptr);  // exact sizes only
  EXPECT_EQ(cache.Take(kBlock), p);
  EXPECT_EQ(cache.Take(kBlock), nullptr);  // taken once
  EXPECT_EQ(cache.Stats().cached_bytes, 0);
  EXPECT_EQ(cache.Stats().hits, 1);
  EXPECT_EQ(cache.Stats().misses, 3);
  std::free(p);
}

TEST(BlockCacheTest, SmallBlocksAndOversizedBlocksAreNotKept) {
  BlockCache cache(4 * kBlock);
  void* small = NewBlock(BlockCache::kMinBlockBytes / 2);
  EXPECT_FALSE(cache.Give(small, BlockCache::kMinBlockBytes / 2));
  std::free(small);
  void* big = NewBlock(8 * kBlock);
  EXPECT_FALSE(cache.Give(big, 8 * kBlock));
  std::free(big);
  BlockCache off(0);
  void* p = NewBlock(kBlock);
  EXPECT_FALSE(off.Give(p, kBlock));
  std::free(p);
}

TEST(BlockCacheTest, CapacityEvictsTheOldestFirst) {
  BlockCache cache(3 * kBlock);
  void* a = NewBlock(kBlock);
  void* b = NewBlock(kBlock);
  void* c = NewBlock(2 * kBlock);
  ASSERT_TRUE(cache.Give(a, kBlock));
  ASSERT_TRUE(cache.Give(b, kBlock));
  ASSERT_TRUE(cache.Give(c, 2 * kBlock));  // 4 blocks' worth > 3: `a` (the oldest) goes
  EXPECT_EQ(cache.Stats().cached_bytes, static_cast<int64_t>(3 * kBlock));
  EXPECT_EQ(cache.Take(kBlock), b);
  EXPECT_EQ(cache.Take(kBlock), nullptr);
  EXPECT_EQ(cache.Take(2 * kBlock), c);
  std::free(b);
  std::free(c);
}

TEST(BlockCacheTest, AllocatorReusesFreedTensorsAndCountsOnlyWhatIsInUse) {
  Allocator a(64 * kBlock);
  void* p = a.Allocate(kBlock - 10, MemoryTag::kActivation);
  std::memset(p, 1, kBlock - 10);
  a.Free(p, kBlock - 10, MemoryTag::kActivation);
  EXPECT_EQ(a.Stats(MemoryTag::kActivation).current_bytes, 0);
  EXPECT_EQ(a.TotalCurrentBytes(), 0);
  EXPECT_EQ(a.CacheStats().cached_bytes, static_cast<int64_t>(kBlock));  // rounded to 64 bytes
  void* q = a.Allocate(kBlock - 20, MemoryTag::kGrad);  // same rounded size, another tag
  EXPECT_EQ(q, p);
  EXPECT_EQ(a.Stats(MemoryTag::kGrad).current_bytes, static_cast<int64_t>(kBlock - 20));
  EXPECT_EQ(a.CacheStats().cached_bytes, 0);
  EXPECT_NE(a.Summary().find("cached 0.00 MiB"), std::string::npos) << a.Summary();
  a.Free(q, kBlock - 20, MemoryTag::kGrad);
}

TEST(BlockCacheTest, AllocatorWithoutCacheFreesAtOnce) {
  Allocator a(0);
  void* p = a.Allocate(kBlock, MemoryTag::kParam);
  a.Free(p, kBlock, MemoryTag::kParam);
  EXPECT_EQ(a.CacheStats().cached_bytes, 0);
  EXPECT_EQ(a.CacheStats().hits, 0);
}

// Another memory source (as the CUDA backend's device allocator uses) gets the same cache and
// accounting: the source sees one allocation for two same-size tensors, a release only when the
// cache lets the block go, and its name in the out-of-memory message.
struct FakeSource {
  static inline int allocated = 0, released = 0;
  static void* Allocate(size_t bytes) {
    ++allocated;
    return std::aligned_alloc(64, bytes);
  }
  static void Release(void* p) {
    ++released;
    std::free(p);
  }
};

TEST(BlockCacheTest, AllocatorOverAnotherMemorySourceCachesAndCountsAlike) {
  FakeSource::allocated = FakeSource::released = 0;
  {
    Allocator a(kBlock,
                {.name = "fake", .allocate = FakeSource::Allocate, .release = FakeSource::Release});
    void* p = a.Allocate(kBlock, MemoryTag::kParam);
    a.Free(p, kBlock, MemoryTag::kParam);
    void* q = a.Allocate(kBlock, MemoryTag::kActivation);
    EXPECT_EQ(q, p);
    EXPECT_EQ(FakeSource::allocated, 1);
    EXPECT_EQ(a.Stats(MemoryTag::kActivation).peak_bytes, static_cast<int64_t>(kBlock));
    a.Free(q, kBlock, MemoryTag::kActivation);
    void* big = a.Allocate(2 * kBlock, MemoryTag::kGrad);  // over the cache's capacity
    a.Free(big, 2 * kBlock, MemoryTag::kGrad);
    EXPECT_EQ(FakeSource::allocated, 2);
    EXPECT_EQ(FakeSource::released, 1);  // the big one; the first stays cached
  }
  EXPECT_EQ(FakeSource::released, 2);  // the cache returns it when the allocator goes
}

// Stream-ordered reuse: a block given with fences is neither handed out nor released until every
// fence is done (a fake event's flag here), whatever its size; then it is cached as usual.
TEST(BlockCacheTest, FencedBlocksWaitForEveryFence) {
  BlockCache cache(8 * kBlock);
  bool first = false, second = false;
  void* p = NewBlock(kBlock);
  cache.GiveAfter(p, kBlock, {[&] { return first; }, [&] { return second; }});
  EXPECT_EQ(cache.Stats().pending_bytes, static_cast<int64_t>(kBlock));
  EXPECT_EQ(cache.Stats().cached_bytes, 0);
  EXPECT_EQ(cache.Take(kBlock), nullptr);  // in use by queued work
  first = true;
  EXPECT_EQ(cache.Take(kBlock), nullptr);  // the second use is still queued
  cache.Release();                         // and Release leaves it alone
  second = true;
  EXPECT_EQ(cache.Take(kBlock), p);
  EXPECT_EQ(cache.Stats().pending_bytes, 0);
  std::free(p);
}

// A small block (never cached) given with a fence is released only once the fence is done.
TEST(BlockCacheTest, FencedSmallBlocksAreReleasedOnlyWhenDone) {
  FakeSource::allocated = FakeSource::released = 0;
  Allocator a(8 * kBlock,
              {.name = "fake", .allocate = FakeSource::Allocate, .release = FakeSource::Release});
  bool done = false;
  void* small = a.Allocate(1024, MemoryTag::kActivation);
  a.FreeAfter(small, 1024, MemoryTag::kActivation, {[&] { return done; }});
  EXPECT_EQ(a.Stats(MemoryTag::kActivation).current_bytes, 0);  // the tag stops counting it
  EXPECT_EQ(FakeSource::released, 0);
  void* big = a.Allocate(kBlock, MemoryTag::kActivation);  // polls: still queued
  EXPECT_EQ(FakeSource::released, 0);
  done = true;
  a.Free(big, kBlock, MemoryTag::kActivation);
  void* again = a.Allocate(kBlock, MemoryTag::kActivation);  // polls: now released
  EXPECT_EQ(again, big);
  EXPECT_EQ(FakeSource::released, 1);
  a.Free(again, kBlock, MemoryTag::kActivation);
}

// Tensors: a use recorded on a tensor (or any view of its storage) keeps its memory from the next
// tensor of that size until the use is done.
TEST(BlockCacheTest, RecordedUsesDelayReuseOfATensorsMemory) {
  Allocator a(8 * kBlock);
  bool done = false;
  const void* first = nullptr;
  {
    Tensor t =
        Tensor::Empty({static_cast<int64_t>(kBlock / 4)}, DType::kF32, MemoryTag::kActivation, &a);
    first = t.raw_data();
    t.Slice(0, 8).RecordUse([&] { return done; });
  }
  EXPECT_EQ(a.CacheStats().pending_bytes, static_cast<int64_t>(kBlock));
  Tensor u =
      Tensor::Empty({static_cast<int64_t>(kBlock / 4)}, DType::kF32, MemoryTag::kActivation, &a);
  EXPECT_NE(u.raw_data(), first);
  u = Tensor();
  done = true;
  Tensor v =
      Tensor::Empty({static_cast<int64_t>(kBlock / 4)}, DType::kF32, MemoryTag::kActivation, &a);
  EXPECT_EQ(v.raw_data(), first);  // settled into the cache, the most recently given block
  EXPECT_EQ(a.CacheStats().pending_bytes, 0);
}

TEST(BlockCacheDeathTest, AnExhaustedSourceIsNamed) {
  Allocator a(0, {.name = "fake device",
                  .allocate = [](size_t) -> void* { return nullptr; },
                  .release = std::free});
  EXPECT_DEATH(a.Allocate(kBlock, MemoryTag::kParam), "out of fake device memory");
}

}  // namespace
}  // namespace loom::runtime
