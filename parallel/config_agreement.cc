#include "parallel/config_agreement.h"

#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "runtime/base/status_macros.h"
#include "runtime/rng.h"

namespace loom::parallel {
namespace {

using runtime::DType;
using runtime::MemoryTag;
using runtime::Tensor;

// Every rank's `values` (the same count on each), rank by rank.
absl::StatusOr<Tensor> GatherAll(comm::Communicator& group, const std::vector<int64_t>& values) {
  Tensor mine =
      Tensor::FromVector<int64_t>({static_cast<int64_t>(values.size())}, values, MemoryTag::kComm);
  Tensor all = Tensor::Empty({group.size() * mine.numel()}, DType::kI64, MemoryTag::kComm);
  LOOM_RETURN_IF_ERROR(group.AllGather(mine, all)->Wait());
  return all;
}

}  // namespace

absl::Status AgreeOnConfig(comm::Communicator& group, const std::vector<ConfigField>& fields) {
  const int n = group.size();
  const int64_t count = static_cast<int64_t>(fields.size());
  LOOM_ASSIGN_OR_RETURN(Tensor counts, GatherAll(group, {count}));
  std::vector<std::string> per_rank;
  bool same = true;
  for (int r = 0; r < n; ++r) {
    same = same && counts.data<int64_t>()[r] == count;
    per_rank.push_back(absl::StrCat("rank ", r, " has ", counts.data<int64_t>()[r]));
  }
  if (!same) {
    return absl::FailedPreconditionError(absl::StrCat(
        "configuration differs between ranks: different numbers of settings (",
        absl::StrJoin(per_rank, ", "), "); start every rank with the same program and flags"));
  }
  if (count == 0) return absl::OkStatus();
  std::vector<int64_t> hashes;
  for (const ConfigField& f :
       fields)  // FNV-1a: the same on every rank and every run (absl::Hash is seeded per process).
    hashes.push_back(static_cast<int64_t>(runtime::Fnv1a64(f.name + "=" + f.value)));
  LOOM_ASSIGN_OR_RETURN(Tensor all, GatherAll(group, hashes));
  std::vector<std::string> problems;
  for (int64_t i = 0; i < count; ++i) {
    std::vector<int> differ;
    for (int r = 1; r < n; ++r) {
      if (all.data<int64_t>()[r * count + i] != all.data<int64_t>()[i]) differ.push_back(r);
    }
    if (differ.empty()) continue;
    problems.push_back(absl::StrCat(fields[i].name, " (this rank, ", group.rank(), ": '",
                                    fields[i].value, "') differs from rank 0 on rank(s) ",
                                    absl::StrJoin(differ, ", ")));
  }
  if (problems.empty()) return absl::OkStatus();
  return absl::FailedPreconditionError(
      absl::StrCat("configuration differs between ranks: ", absl::StrJoin(problems, "; "),
                   "; start every rank with the same flags"));
}

absl::Status ShareStatus(comm::Communicator& group, const absl::Status& local, int root) {
  // [code, message length, message bytes...] as i32 words.
  constexpr int kMaxMessage = 1000;
  constexpr int kWords = 2 + kMaxMessage / 4;
  std::vector<int32_t> words(kWords, 0);
  if (group.rank() == root) {
    const std::string message(local.message().substr(0, kMaxMessage));
    words[0] = static_cast<int32_t>(local.code());
    words[1] = static_cast<int32_t>(message.size());
    std::memcpy(words.data() + 2, message.data(), message.size());
  }
  runtime::Tensor buffer =
      runtime::Tensor::FromVector<int32_t>({kWords}, words, runtime::MemoryTag::kComm);
  LOOM_RETURN_IF_ERROR(group.Broadcast(buffer, root)->Wait());
  if (!local.ok()) return local;
  const int32_t* shared = buffer.data<int32_t>();
  if (shared[0] == static_cast<int32_t>(absl::StatusCode::kOk)) return absl::OkStatus();
  return absl::Status(static_cast<absl::StatusCode>(shared[0]),
                      std::string(reinterpret_cast<const char*>(shared + 2), shared[1]));
}

}  // namespace loom::parallel
