#include "parallel/pipeline/channels.h"

#include <set>

#include "runtime/base/check.h"
#include "runtime/base/status_macros.h"

namespace loom::parallel::pipeline {

absl::StatusOr<std::unique_ptr<Channels>> Channels::Create(comm::Communicator& pp,
                                                           const Placement& placement) {
  if (pp.size() != placement.ranks) {
    return absl::InvalidArgumentError("pipeline channels: the group's size is not the placement's");
  }
  // (from, to, gradient) of every stage boundary that crosses ranks, sorted: the same order of
  // splits everywhere.
  std::set<std::tuple<int, int, bool>> needed;
  for (int s = 0; s + 1 < placement.stages(); ++s) {
    const int a = placement.rank_of(s), b = placement.rank_of(s + 1);
    if (a == b) continue;
    needed.insert({a, b, false});
    needed.insert({b, a, true});
  }
  std::unique_ptr<Channels> c(new Channels(pp.rank()));
  for (const auto& [from, to, gradient] : needed) {
    const bool member = pp.rank() == from || pp.rank() == to;
    // Members: color 0, the sender first; everyone else alone (and the communicator dropped).
    LOOM_ASSIGN_OR_RETURN(std::unique_ptr<comm::Communicator> link,
                          pp.Split(member ? 0 : 1 + pp.rank(), pp.rank() == from ? 0 : 1));
    if (member) c->links_[{from, to, gradient}] = std::move(link);
  }
  return c;
}

comm::Communicator& Channels::Get(int from, int to, bool gradient) {
  const auto it = links_.find({from, to, gradient});
  LOOM_CHECK(it != links_.end()) << "pipeline: no channel from rank " << from << " to rank " << to
                                 << (gradient ? " for gradients" : " for activations");
  return *it->second;
}

std::shared_ptr<comm::Work> Channels::Send(const runtime::Tensor& buffer, int to, bool gradient) {
  return Get(rank_, to, gradient).Send(buffer, /*peer=*/1);
}

std::shared_ptr<comm::Work> Channels::Recv(runtime::Tensor& buffer, int from, bool gradient) {
  return Get(from, rank_, gradient).Recv(buffer, /*peer=*/0);
}

}  // namespace loom::parallel::pipeline
