#include "parallel/pipeline/executor.h"

#include "absl/strings/str_cat.h"
#include "runtime/base/check.h"

namespace loom::parallel::pipeline {

using runtime::DType;
using runtime::MemoryTag;
using runtime::Tensor;

absl::Status Executor::RunStep() {
  const Placement& p = schedule_.placement;
  std::map<Key, Stash> stashes;
  // Data produced here for another stage (outgoing), and data arrived for a stage here.
  std::map<Key, Tensor> activations, gradients;
  std::vector<std::pair<std::shared_ptr<comm::Work>, Tensor>> sends;
  auto take = [](std::map<Key, Tensor>& from, Key key) {
    auto it = from.find(key);
    LOOM_CHECK(it != from.end()) << "pipeline executor: no data for micro-batch " << key.first
                                 << " of stage " << key.second << " (was the schedule checked?)";
    Tensor t = std::move(it->second);
    from.erase(it);
    return t;
  };
  trace_.clear();
  auto now_us = [] {
    return std::chrono::duration_cast<std::chrono::microseconds>(
               std::chrono::steady_clock::now().time_since_epoch())
        .count();
  };
  for (const Instr& i : schedule_.ranks[rank_]) {
    const Key key{i.micro_batch, i.stage};
    const int64_t start = now_us();
    switch (i.kind) {
      case OpKind::kForward: {
        const Tensor input =
            i.stage == 0 ? Tensor() : take(activations, {i.micro_batch, i.stage - 1});
        auto [it, added] = stashes.emplace(key, runner_.NewStash());
        LOOM_CHECK(added) << "pipeline executor: " << i.ToString() << " twice";
        Tensor out = runner_.Forward(it->second, i.micro_batch, i.stage, input);
        if (i.stage + 1 < p.stages()) activations[key] = std::move(out);
        break;
      }
      case OpKind::kBackwardInput: {
        const Tensor dy =
            i.stage + 1 == p.stages() ? Tensor() : take(gradients, {i.micro_batch, i.stage + 1});
        Tensor dx = runner_.BackwardInput(stashes.at(key), i.micro_batch, i.stage, dy);
        if (i.stage > 0) gradients[key] = std::move(dx);
        break;
      }
      case OpKind::kBackwardWeight:
        runner_.BackwardWeight(stashes.at(key), i.micro_batch, i.stage);
        stashes.erase(key);
        break;
      case OpKind::kSendActivation:
      case OpKind::kSendGradient: {
        const bool gradient = i.kind == OpKind::kSendGradient;
        Tensor data = take(gradient ? gradients : activations, key);
        sends.emplace_back(channels_.Send(data, i.peer, gradient), data);
        break;
      }
      case OpKind::kRecvActivation:
      case OpKind::kRecvGradient: {
        const bool gradient = i.kind == OpKind::kRecvGradient;
        Tensor buffer = Tensor::Empty(runner_.BoundaryShape(), DType::kF32, MemoryTag::kActivation);
        if (absl::Status s = channels_.Recv(buffer, i.peer, gradient)->Wait(); !s.ok()) return s;
        (gradient ? gradients : activations)[key] = std::move(buffer);
        break;
      }
      case OpKind::kOptimizerStep:
        continue;  // the caller's
    }
    trace_.push_back({i, start, now_us()});
  }
  absl::Status status;
  for (auto& [work, data] : sends) status.Update(work->Wait());
  if (!stashes.empty()) {
    status.Update(absl::InternalError(
        absl::StrCat("pipeline executor: ", stashes.size(), " stashes left after the step")));
  }
  return status;
}

}  // namespace loom::parallel::pipeline
