// Vocabulary shared by every communicator backend: reduction and collective kinds, and the
// fingerprint that identifies one collective call for hang and mismatch diagnostics.
//
//   Fingerprint fp{CollectiveOp::kAllReduce, DType::kF32, /*count=*/4099, ReduceOp::kSum};
//   fp.ToString();   // "AllReduce(f32, count 4099, sum)"
#pragma once

#include <cstdint>
#include <string>

#include "absl/strings/string_view.h"
#include "runtime/dtype.h"

namespace loom::comm {

enum class ReduceOp : uint8_t { kSum, kAvg, kMax, kMin };
absl::string_view ReduceOpName(ReduceOp op);

enum class CollectiveOp : uint8_t {
  kAllReduce,
  kReduceScatter,
  kAllGather,
  kAllToAll,
  kAllToAllV,
  kBroadcast,
  kSend,
  kRecv,
  kBarrier,
};
absl::string_view CollectiveOpName(CollectiveOp op);  // "AllReduce", ...

// What every rank must agree on for one collective. `count` is the element count each rank
// contributes (AllReduce: the buffer; ReduceScatter / AllGather: one rank's block; AllToAll: one
// peer's block; AllToAllV: this rank's total sent; Broadcast: the buffer).
struct Fingerprint {
  CollectiveOp op = CollectiveOp::kBarrier;
  runtime::DType dtype = runtime::DType::kF32;
  int64_t count = 0;
  ReduceOp reduce = ReduceOp::kSum;
  int root = -1;  // Broadcast root, Send/Recv peer; -1 otherwise

  std::string ToString() const;
  bool operator==(const Fingerprint&) const = default;
};

}  // namespace loom::comm
