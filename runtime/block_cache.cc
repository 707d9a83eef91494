#include "runtime/block_cache.h"

#include <algorithm>
#include <cstdlib>

namespace loom::runtime {

void* BlockCache::Take(size_t bytes) {
  if (bytes < kMinBlockBytes || capacity_ <= 0) return nullptr;
  std::lock_guard<std::mutex> lock(mu_);
  auto it = by_size_.find(bytes);
  if (it == by_size_.end() || it->second.empty()) {
    ++stats_.misses;
    return nullptr;
  }
  const auto block = it->second.back();  // the most recently given: likeliest still in cache
  it->second.pop_back();
  void* ptr = block->ptr;
  fifo_.erase(block);
  stats_.cached_bytes -= static_cast<int64_t>(bytes);
  ++stats_.hits;
  return ptr;
}

bool BlockCache::Give(void* block, size_t bytes) {
  if (bytes < kMinBlockBytes || static_cast<int64_t>(bytes) > capacity_) return false;
  std::lock_guard<std::mutex> lock(mu_);
  while (stats_.cached_bytes + static_cast<int64_t>(bytes) > capacity_) EvictOldestLocked();
  fifo_.push_back(Block{block, bytes});
  by_size_[bytes].push_back(std::prev(fifo_.end()));
  stats_.cached_bytes += static_cast<int64_t>(bytes);
  return true;
}

void BlockCache::EvictOldestLocked() {
  const Block oldest = fifo_.front();
  auto& same_size = by_size_[oldest.bytes];
  same_size.erase(std::find(same_size.begin(), same_size.end(), fifo_.begin()));
  fifo_.pop_front();
  stats_.cached_bytes -= static_cast<int64_t>(oldest.bytes);
  release_(oldest.ptr);
}

void BlockCache::Release() {
  std::lock_guard<std::mutex> lock(mu_);
  while (!fifo_.empty()) EvictOldestLocked();
}

BlockCacheStats BlockCache::Stats() const {
  std::lock_guard<std::mutex> lock(mu_);
  return stats_;
}

}  // namespace loom::runtime
