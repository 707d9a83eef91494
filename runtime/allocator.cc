#include "runtime/allocator.h"

#include <cstdlib>

#include "absl/strings/str_format.h"
#include "runtime/base/check.h"
#include "runtime/base/env.h"
#include "runtime/base/logging.h"

namespace loom::runtime {

absl::string_view MemoryTagName(MemoryTag tag) {
  switch (tag) {
    case MemoryTag::kParam:
      return "param";
    case MemoryTag::kGrad:
      return "grad";
    case MemoryTag::kOptimizer:
      return "optimizer";
    case MemoryTag::kActivation:
      return "activation";
    case MemoryTag::kComm:
      return "comm";
    case MemoryTag::kWorkspace:
      return "workspace";
  }
  return "unknown";
}

namespace {

size_t RoundedSize(size_t bytes) {
  return (bytes + kAllocationAlignment - 1) / kAllocationAlignment * kAllocationAlignment;
}

}  // namespace

int64_t Allocator::CacheBytesFromEnv(const char* variable, int64_t default_bytes) {
  const absl::StatusOr<int64_t> bytes = base::GetEnvInt(variable, default_bytes);
  if (!bytes.ok() || *bytes < 0) {
    LOOM_LOG(WARNING) << variable << " must be a byte count >= 0; using the default "
                      << default_bytes;
    return default_bytes;
  }
  return *bytes;
}

MemorySource MemorySource::Host() {
  return {.name = "host",
          .allocate = [](size_t bytes) { return std::aligned_alloc(kAllocationAlignment, bytes); },
          .release = std::free};
}

Allocator::Allocator()
    : Allocator(CacheBytesFromEnv("LOOM_HOST_CACHE_BYTES", kDefaultCacheBytes)) {}

Allocator& Allocator::Default() {
  static Allocator* allocator = new Allocator();  // never destroyed: tensors may outlive main
  return *allocator;
}

namespace {
thread_local Allocator* current_allocator = nullptr;
}  // namespace

Allocator& Allocator::Current() {
  return current_allocator != nullptr ? *current_allocator : Default();
}

AllocatorScope::AllocatorScope(Allocator* allocator) : previous_(current_allocator) {
  current_allocator = allocator;
}

AllocatorScope::~AllocatorScope() { current_allocator = previous_; }

void* Allocator::Allocate(size_t bytes, MemoryTag tag) {
  if (bytes == 0) return nullptr;
  const size_t rounded = RoundedSize(bytes);
  void* p = cache_.Take(rounded);
  if (p == nullptr) p = source_.allocate(rounded);
  if (p == nullptr) {  // the cache's blocks may be what the source is missing
    cache_.Release();
    p = source_.allocate(rounded);
  }
  LOOM_CHECK(p != nullptr) << "out of " << source_.name << " memory allocating " << bytes
                           << " bytes for tag " << MemoryTagName(tag) << "; " << Summary();
  Record(bytes, tag);
  return p;
}

void Allocator::Free(void* ptr, size_t bytes, MemoryTag tag) {
  if (ptr == nullptr) return;
  if (!cache_.Give(ptr, RoundedSize(bytes))) source_.release(ptr);
  Unrecord(bytes, tag);
}

void Allocator::FreeAfter(void* ptr, size_t bytes, MemoryTag tag,
                          std::vector<BlockCache::Fence> fences) {
  if (ptr == nullptr) return;
  cache_.GiveAfter(ptr, RoundedSize(bytes), std::move(fences));
  Unrecord(bytes, tag);
}

void Allocator::Record(size_t bytes, MemoryTag tag) {
  Counter& c = counters_[static_cast<int>(tag)];
  const int64_t now =
      c.current.fetch_add(static_cast<int64_t>(bytes)) + static_cast<int64_t>(bytes);
  int64_t peak = c.peak.load();
  while (now > peak && !c.peak.compare_exchange_weak(peak, now)) {
  }
  int64_t largest = c.largest.load();
  while (static_cast<int64_t>(bytes) > largest &&
         !c.largest.compare_exchange_weak(largest, static_cast<int64_t>(bytes))) {
  }
  c.allocations.fetch_add(1);
}

void Allocator::Unrecord(size_t bytes, MemoryTag tag) {
  Counter& c = counters_[static_cast<int>(tag)];
  c.current.fetch_sub(static_cast<int64_t>(bytes));
  c.allocations.fetch_sub(1);
}

MemoryStats Allocator::Stats(MemoryTag tag) const {
  const Counter& c = counters_[static_cast<int>(tag)];
  return MemoryStats{c.current.load(), c.peak.load(), c.allocations.load(), c.largest.load()};
}

int64_t Allocator::TotalCurrentBytes() const {
  int64_t total = 0;
  for (const Counter& c : counters_) total += c.current.load();
  return total;
}

void Allocator::ResetPeaks() {
  for (Counter& c : counters_) {
    c.peak.store(c.current.load());
    c.largest.store(0);
  }
}

std::string Allocator::Summary() const {
  std::string out;
  for (int t = 0; t < kNumMemoryTags; ++t) {
    const MemoryStats s = Stats(static_cast<MemoryTag>(t));
    absl::StrAppendFormat(&out, "%s%s %.2f MiB (peak %.2f MiB)", t == 0 ? "" : ", ",
                          MemoryTagName(static_cast<MemoryTag>(t)), s.current_bytes / 1048576.0,
                          s.peak_bytes / 1048576.0);
  }
  absl::StrAppendFormat(&out, ", cached %.2f MiB", cache_.Stats().cached_bytes / 1048576.0);
  return out;
}

}  // namespace loom::runtime
