#include "runtime/block_cache.h"

#include <algorithm>
#include <cstdlib>

namespace loom::runtime {

BlockCache::~BlockCache() {
  Release();
  for (const Pending& p : pending_) release_(p.block.ptr);
}

void* BlockCache::Take(size_t bytes) {
  if (bytes < kMinBlockBytes || capacity_ <= 0) return nullptr;
  std::lock_guard<std::mutex> lock(mu_);
  SettleLocked();
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
  std::lock_guard<std::mutex> lock(mu_);
  return KeepLocked(Block{block, bytes});
}

bool BlockCache::KeepLocked(const Block& block) {
  if (block.bytes < kMinBlockBytes || static_cast<int64_t>(block.bytes) > capacity_) return false;
  while (stats_.cached_bytes + static_cast<int64_t>(block.bytes) > capacity_) EvictOldestLocked();
  fifo_.push_back(block);
  by_size_[block.bytes].push_back(std::prev(fifo_.end()));
  stats_.cached_bytes += static_cast<int64_t>(block.bytes);
  return true;
}

void BlockCache::GiveAfter(void* block, size_t bytes, std::vector<Fence> fences) {
  std::lock_guard<std::mutex> lock(mu_);
  pending_.push_back(Pending{Block{block, bytes}, std::move(fences)});
  stats_.pending_bytes += static_cast<int64_t>(bytes);
  SettleLocked();
}

void BlockCache::SettleLocked() {
  std::erase_if(pending_, [&](Pending& p) {
    std::erase_if(p.fences, [](const Fence& done) { return done(); });
    if (!p.fences.empty()) return false;
    stats_.pending_bytes -= static_cast<int64_t>(p.block.bytes);
    if (!KeepLocked(p.block)) release_(p.block.ptr);
    return true;
  });
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
  SettleLocked();
  while (!fifo_.empty()) EvictOldestLocked();
}

BlockCacheStats BlockCache::Stats() const {
  std::lock_guard<std::mutex> lock(mu_);
  return stats_;
}

}  // namespace loom::runtime
