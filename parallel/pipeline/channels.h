// Channels: the point-to-point links a pipeline schedule uses, one two-rank communicator per
// (sender, receiver, activation | gradient), so a receive posted on one never holds up traffic on
// another (a Communicator runs its calls in order, one at a time). This is the transfer model the
// checker proves schedules against (parallel/pipeline/check.h).
//
//   LOOM_ASSIGN_OR_RETURN(auto channels, Channels::Create(pp_group, schedule.placement));
//   auto w = channels->Send(activation, /*to=*/1, /*gradient=*/false);   // asynchronous
//   LOOM_RETURN_IF_ERROR(channels->Recv(buffer, /*from=*/0, /*gradient=*/false)->Wait());
#pragma once

#include <map>
#include <memory>
#include <tuple>

#include "absl/status/statusor.h"
#include "comm/communicator.h"
#include "parallel/pipeline/ir.h"

namespace loom::parallel::pipeline {

class Channels {
 public:
  // Collective over `pp` (its rank r is pipeline rank r): creates every channel the placement's
  // stage boundaries need, in the same order on every rank.
  static absl::StatusOr<std::unique_ptr<Channels>> Create(comm::Communicator& pp,
                                                          const Placement& placement);

  std::shared_ptr<comm::Work> Send(const runtime::Tensor& buffer, int to, bool gradient);
  std::shared_ptr<comm::Work> Recv(runtime::Tensor& buffer, int from, bool gradient);

 private:
  explicit Channels(int rank) : rank_(rank) {}
  comm::Communicator& Get(int from, int to, bool gradient);

  int rank_;
  std::map<std::tuple<int, int, bool>, std::unique_ptr<comm::Communicator>> links_;
};

}  // namespace loom::parallel::pipeline
