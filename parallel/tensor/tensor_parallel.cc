#include "parallel/tensor/tensor_parallel.h"

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "runtime/base/check.h"

namespace loom::parallel {

ShardSpec TensorParallelOptions::Spec(int dim) const {
  if (!active()) return ShardSpec::Replicated();
  return ShardSpec::Split(dim, "tp", group->rank(), group->size(), parts, block);
}

void AllReduceSumInPlace(comm::Communicator& group, runtime::Tensor& t) {
  const absl::Status s = group.AllReduce(t, t, comm::ReduceOp::kSum)->Wait();
  LOOM_CHECK(s.ok()) << "tensor-parallel all-reduce failed: " << s;
}

absl::Status CheckDivides(int tp, int64_t count, const std::string& what,
                          const std::string& model) {
  if (count % tp == 0) return absl::OkStatus();
  std::vector<int64_t> choices;
  for (int64_t d = 1; d <= count; ++d) {
    if (count % d == 0) choices.push_back(d);
  }
  return absl::InvalidArgumentError(absl::StrCat("tp=", tp, " does not divide the ", count, " ",
                                                 what, " of ", model, "; choose tp in {",
                                                 absl::StrJoin(choices, ", "), "}"));
}

}  // namespace loom::parallel
