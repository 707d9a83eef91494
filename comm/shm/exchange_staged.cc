// Generic exchange: every rank's StageInput bytes (comm/exchange.h) reach every rank through the
// slots, in as many steps as the longest needs (the first step also carries each rank's length),
// then each rank computes its output with ComputeOutput — the same semantics the local backend
// has, written once. Used for AllToAllV; costs n copies of the staged data per rank.
#include <algorithm>
#include <cstring>
#include <vector>

#include "comm/exchange.h"
#include "comm/shm/algorithms.h"

namespace loom::comm {

absl::Status ExchangeStaged(ShmGroup& g, const CollectiveArgs& a, ShmWait& w) {
  const int n = g.size(), me = g.rank();
  const std::vector<char> mine = StageInput(a, n);
  const int64_t capacity = g.MaxStepBytes();
  constexpr int64_t kHeader = sizeof(uint64_t);
  std::vector<std::vector<char>> theirs(static_cast<size_t>(n));
  std::vector<int64_t> length(static_cast<size_t>(n), 0);
  int64_t longest = 0;
  // Step k carries bytes [Begin(k), Begin(k + 1)) of every rank's staged input.
  auto begin = [&](int64_t k) { return k == 0 ? 0 : (capacity - kHeader) + (k - 1) * capacity; };
  for (int64_t k = 0; k == 0 || begin(k) < longest; ++k) {
    const ShmStep step = g.NextStep(capacity);
    char* slot = g.Slot(me, step);
    const int64_t lo = begin(k), hi = begin(k + 1);
    const int64_t mine_len = static_cast<int64_t>(mine.size());
    char* data = slot;
    if (k == 0) {
      const uint64_t len = mine.size();
      std::memcpy(slot, &len, kHeader);
      data += kHeader;
    }
    if (lo < mine_len) std::memcpy(data, mine.data() + lo, std::min(hi, mine_len) - lo);
    g.Publish(ShmGroup::kArrived, step.number);
    absl::Status s = g.WaitAll(ShmGroup::kArrived, step.number, w);
    if (!s.ok()) return s;
    for (int r = 0; r < n; ++r) {
      if (r == me) continue;
      const char* src = g.Slot(r, step);
      if (k == 0) {
        uint64_t len = 0;
        std::memcpy(&len, src, kHeader);
        length[r] = static_cast<int64_t>(len);
        theirs[r].resize(len);
        longest = std::max(longest, length[r]);
        src += kHeader;
      }
      if (lo < length[r]) std::memcpy(theirs[r].data() + lo, src, std::min(hi, length[r]) - lo);
    }
    longest = std::max(longest, mine_len);
  }
  std::vector<const char*> staged(static_cast<size_t>(n));
  for (int r = 0; r < n; ++r) staged[r] = r == me ? mine.data() : theirs[r].data();
  return ComputeOutput(a, me, n, staged);
}

}  // namespace loom::comm
