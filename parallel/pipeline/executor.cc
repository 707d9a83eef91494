#include "parallel/pipeline/executor.h"

#include "absl/strings/str_cat.h"
#include "runtime/allocator.h"
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
  // Activation bytes in use beyond the step's start, less the boundary buffers held here.
  runtime::Allocator& allocator = runtime::Allocator::Default();
  auto activation_bytes = [&] { return allocator.Stats(MemoryTag::kActivation).current_bytes; };
  const int64_t baseline = activation_bytes();
  auto held_bytes = [&] {
    int64_t boundary = 0;
    for (const auto* held : {&activations, &gradients}) {
      for (const auto& [key, t] : *held) boundary += static_cast<int64_t>(t.nbytes());
    }
    for (const auto& [work, data] : sends) boundary += static_cast<int64_t>(data.nbytes());
    return activation_bytes() - baseline - boundary;
  };
  // Drops the sends that are done (their buffers with them); a failed one ends the step.
  auto finish_sends = [&]() -> absl::Status {
    absl::Status status;
    std::erase_if(sends, [&](const auto& send) {
      if (!send.first->Test()) return false;
      status.Update(send.first->Wait());
      return true;
    });
    return status;
  };
  // F, B and W of one (micro-batch, stage); returns what the op added to its stash.
  auto compute = [&](const Instr& i) -> int64_t {
    const Key key{i.micro_batch, i.stage};
    switch (i.kind) {
      case OpKind::kForward: {
        const Tensor input =
            i.stage == 0 ? Tensor() : take(activations, {i.micro_batch, i.stage - 1});
        auto [it, added] = stashes.emplace(key, runner_.NewStash());
        LOOM_CHECK(added) << "pipeline executor: " << i.ToString() << " twice";
        Tensor out = runner_.Forward(it->second, i.micro_batch, i.stage, input);
        if (i.stage + 1 < p.stages()) activations[key] = std::move(out);
        return it->second.activation_bytes();
      }
      case OpKind::kBackwardInput: {
        const Tensor dy =
            i.stage + 1 == p.stages() ? Tensor() : take(gradients, {i.micro_batch, i.stage + 1});
        Stash& stash = stashes.at(key);
        const int64_t before = stash.activation_bytes();
        Tensor dx = runner_.BackwardInput(stash, i.micro_batch, i.stage, dy);
        if (i.stage > 0) gradients[key] = std::move(dx);
        return stash.activation_bytes() - before;
      }
      default:  // kBackwardWeight
        runner_.BackwardWeight(stashes.at(key), i.micro_batch, i.stage);
        stashes.erase(key);
        return 0;
    }
  };
  trace_.clear();
  const std::vector<Instr>& list = schedule_.ranks[rank_];
  for (size_t k = 0; k < list.size(); ++k) {
    const Instr& i = list[k];
    const Key key{i.micro_batch, i.stage};
    if (absl::Status s = finish_sends(); !s.ok()) return s;
    const int64_t start = runtime::SteadyMicros();
    if (i.paired && options_.overlap_pairs) {
      // DualPipe's pair: the F and the B right after it take turns on two lanes, handing over
      // where one waits for a collective (the MoE exchanges), so one computes while the other's
      // exchange travels. Both events span the pair.
      const Instr& b = list[k + 1];
      LOOM_CHECK(b.kind == OpKind::kBackwardInput)
          << "pipeline executor: " << i.ToString() << " is paired but followed by " << b.ToString();
      int64_t f_bytes = 0, b_bytes = 0;
      lanes_.Run({[&] { f_bytes = compute(i); }, [&] { b_bytes = compute(b); }},
                 /*interleave=*/true);
      const int64_t end = runtime::SteadyMicros(), held = held_bytes();
      for (const auto& [instr, bytes] : {std::pair{&i, f_bytes}, std::pair{&b, b_bytes}}) {
        trace_.push_back({.instr = *instr,
                          .start_us = start,
                          .end_us = end,
                          .stash_bytes = bytes,
                          .held_bytes = held});
      }
      ++k;
      continue;
    }
    int64_t stash_bytes = 0;
    switch (i.kind) {
      case OpKind::kForward:
      case OpKind::kBackwardInput:
      case OpKind::kBackwardWeight:
        stash_bytes = compute(i);
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
    trace_.push_back({.instr = i,
                      .start_us = start,
                      .end_us = runtime::SteadyMicros(),
                      .stash_bytes = stash_bytes,
                      .held_bytes = held_bytes()});
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
