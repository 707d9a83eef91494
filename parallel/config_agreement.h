// Configuration agreement: before a job trains, every rank checks that all ranks were started with
// the same settings, so a rank launched with a different flag fails at once with a message naming
// the field, instead of hanging in a collective or silently training something else.
//
//   std::vector<ConfigField> fields = {{"batch", "8"}, {"zero", "1"}, ...};
//   LOOM_RETURN_IF_ERROR(AgreeOnConfig(world, fields));
//   // FailedPrecondition on every rank: "configuration differs between ranks: batch (this rank:
//   // 16) differs from rank 0 on rank(s) 1"
#pragma once

#include <string>
#include <vector>

#include "absl/status/status.h"
#include "comm/communicator.h"

namespace loom::parallel {

struct ConfigField {
  std::string name;
  std::string value;
};

// Collective over `group`: all-gathers a stable 64-bit hash (FNV-1a) of every "name=value" and
// compares each field with rank 0's. OK when all agree; otherwise FailedPrecondition on every rank
// naming each differing field, this rank's value and the ranks that differ from rank 0. Ranks that
// pass different numbers of fields fail the same way (naming the counts). Communication errors
// are returned as they are.
absl::Status AgreeOnConfig(comm::Communicator& group, const std::vector<ConfigField>& fields);

// Collective over `group`: `root`'s status (code and message, the message cut at 1000 bytes) on
// every rank, for work one rank did on behalf of all (a checkpoint's writer), so every rank takes
// the same decision after it. A rank whose own `local` failed keeps its error. Communication
// errors are returned as they are.
absl::Status ShareStatus(comm::Communicator& group, const absl::Status& local, int root);

}  // namespace loom::parallel
