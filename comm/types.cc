#include "comm/types.h"

#include "absl/strings/str_cat.h"

namespace loom::comm {

absl::string_view ReduceOpName(ReduceOp op) {
  switch (op) {
    case ReduceOp::kSum:
      return "sum";
    case ReduceOp::kAvg:
      return "avg";
    case ReduceOp::kMax:
      return "max";
    case ReduceOp::kMin:
      return "min";
  }
  return "?";
}

absl::string_view CollectiveOpName(CollectiveOp op) {
  switch (op) {
    case CollectiveOp::kAllReduce:
      return "AllReduce";
    case CollectiveOp::kReduceScatter:
      return "ReduceScatter";
    case CollectiveOp::kAllGather:
      return "AllGather";
    case CollectiveOp::kAllToAll:
      return "AllToAll";
    case CollectiveOp::kAllToAllV:
      return "AllToAllV";
    case CollectiveOp::kBroadcast:
      return "Broadcast";
    case CollectiveOp::kSend:
      return "Send";
    case CollectiveOp::kRecv:
      return "Recv";
    case CollectiveOp::kBarrier:
      return "Barrier";
  }
  return "?";
}

std::string Fingerprint::ToString() const {
  std::string s =
      absl::StrCat(CollectiveOpName(op), "(", runtime::DTypeName(dtype), ", count ", count);
  if (op == CollectiveOp::kAllReduce || op == CollectiveOp::kReduceScatter) {
    absl::StrAppend(&s, ", ", ReduceOpName(reduce));
  }
  if (op == CollectiveOp::kBroadcast) absl::StrAppend(&s, ", root ", root);
  if (op == CollectiveOp::kSend || op == CollectiveOp::kRecv) absl::StrAppend(&s, ", peer ", root);
  return s + ")";
}

}  // namespace loom::comm
