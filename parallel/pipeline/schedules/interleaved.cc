#include <algorithm>

#include "parallel/pipeline/schedules/schedules.h"

namespace loom::parallel::pipeline {

// Megatron's interleaved 1F1B: rank r holds chunks c = 0..v-1 (stage c·p + r). The k-th forward
// of a rank is micro-batch (k / (p·v))·p + k mod p of chunk (k / p) mod v: groups of p
// micro-batches go through each chunk in turn; the k-th backward the same with the chunks in
// reverse. Warm-up: 2·(p - r - 1) + (v - 1)·p forwards, then one forward one backward.
Schedule Interleaved1F1B(const ScheduleOptions& o) {
  const int p = o.ranks, m = o.micro_batches, v = o.virtual_stages;
  Schedule s{.name = "interleaved",
             .placement = {.ranks = p, .chunks = v},
             .micro_batches = m,
             .ranks = std::vector<std::vector<Instr>>(p)};
  const int total = m * v;
  auto mb_of = [&](int k) { return (k / (p * v)) * p + k % p; };
  for (int r = 0; r < p; ++r) {
    std::vector<Instr>& list = s.ranks[r];
    auto forward = [&](int k) {
      list.push_back({OpKind::kForward, mb_of(k), ((k / p) % v) * p + r});
    };
    auto backward = [&](int k) {
      const int stage = (v - 1 - (k / p) % v) * p + r;
      list.push_back({OpKind::kBackwardInput, mb_of(k), stage});
      list.push_back({OpKind::kBackwardWeight, mb_of(k), stage});
    };
    const int warmup = std::min(2 * (p - r - 1) + (v - 1) * p, total);
    for (int k = 0; k < warmup; ++k) forward(k);
    for (int k = 0; k < total - warmup; ++k) {
      forward(warmup + k);
      backward(k);
    }
    for (int k = total - warmup; k < total; ++k) backward(k);
    list.push_back({OpKind::kOptimizerStep});
  }
  InsertTransfers(s);
  return s;
}

}  // namespace loom::parallel::pipeline
