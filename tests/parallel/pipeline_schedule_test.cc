// Pipeline schedules as data: every generator's schedules pass the checker; the checker rejects
// hand-broken ones, each with its own message; the simulator's bubble matches the published
// formulas for uniform costs, and its peak stashes the schedules' memory bounds.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <memory>
#include <string>
#include <tuple>
#include <vector>

#include "absl/strings/str_cat.h"
#include "comm/local/local_backend.h"
#include "parallel/lanes.h"
#include "parallel/pipeline/check.h"
#include "parallel/pipeline/executor.h"
#include "parallel/pipeline/schedules/schedules.h"
#include "parallel/pipeline/simulate.h"

namespace loom::parallel::pipeline {
namespace {

using ::testing::HasSubstr;

Schedule Make(const std::string& name, int p, int m) {
  absl::StatusOr<Schedule> s = MakeSchedule(name, {.ranks = p, .micro_batches = m});
  EXPECT_TRUE(s.ok()) << s.status();
  return s.ok() ? *s : Schedule{};
}

// Idle time summed over the ranks.
double BubbleTime(const Timeline& t) {
  return t.bubble_fraction * t.step_time * static_cast<double>(t.ranks.size());
}

TEST(PipelineSchedules, EveryGeneratorPassesTheChecker) {
  for (const std::string& name : ScheduleNames()) {
    for (int p : {2, 4}) {
      for (int m : {p, 2 * p, 3 * p}) {
        if (name == "dualpipe-v" && m < 2 * p) continue;  // it needs two per rank
        const Schedule s = Make(name, p, m);
        EXPECT_TRUE(CheckSchedule(s).ok()) << name << " p " << p << " m " << m;
        // Every rank computes exactly its stages' 3 ops per micro-batch.
        int compute = 0;
        for (const auto& list : s.ranks) {
          compute += static_cast<int>(std::count_if(
              list.begin(), list.end(), [](const Instr& i) { return IsCompute(i.kind); }));
        }
        EXPECT_EQ(compute, 3 * m * s.placement.stages()) << name;
      }
    }
  }
}

// The published formulas take the backward as one op: B carries W's cost here (W = 0), so the
// gradient leaves a stage after its whole backward. (loom sends it after B, before W: with W
// split off, even 1F1B idles less than the formula.)
const OpCosts kFusedBackward = {.forward = 1.0, .backward_input = 2.0, .backward_weight = 0.0};

TEST(PipelineSchedules, GPipeAnd1F1BBubbleIsTheFormula) {
  for (const char* name : {"gpipe", "1f1b"}) {
    for (int p : {2, 4, 8}) {
      for (int m : {p, 2 * p, 3 * p + 1}) {
        const Timeline t = Simulate(Make(name, p, m), kFusedBackward);
        EXPECT_NEAR(t.bubble_fraction, (p - 1.0) / (m + p - 1.0), 1e-12)
            << name << " p " << p << " m " << m;
        EXPECT_DOUBLE_EQ(t.step_time, 3.0 * (m + p - 1)) << name;
      }
    }
  }
}

TEST(PipelineSchedules, InterleavedDividesTheBubbleByTheChunks) {
  // Each chunk is 1/v of a stage (backward fused, as the formula takes it). Megatron: the bubble
  // is (p - 1) / (v·m) of the ideal time, a fraction (p - 1) / (v·m + p - 1) of the step.
  for (int p : {2, 4}) {
    for (int m : {p, 2 * p}) {
      const int v = 2;
      const double c = 1.0 / v;
      const Timeline t = Simulate(Make("interleaved", p, m),
                                  {.forward = c, .backward_input = 2 * c, .backward_weight = 0});
      EXPECT_NEAR(t.bubble_fraction, (p - 1.0) / (v * m + p - 1.0), 1e-12)
          << "p " << p << " m " << m;
    }
  }
}

// Zero bubble (Qi et al.): with F = B = W, ZB-H1 idles (p - 1)(F + B - W) against 1F1B's
// (p - 1)(F + B + W).
TEST(PipelineSchedules, ZeroBubbleH1IdlesAThirdOf1F1B) {
  for (int p : {2, 4, 8}) {
    for (int m : {2 * p, 4 * p}) {
      const double one_f_one_b = BubbleTime(Simulate(Make("1f1b", p, m), kFusedBackward));
      const double h1 = BubbleTime(Simulate(Make("zb-h1", p, m), {}));
      EXPECT_NEAR(h1 / one_f_one_b, 1.0 / 3.0, 1e-12) << "p " << p << " m " << m;
    }
  }
}

TEST(PipelineSchedules, VSchedulesAreNearlyBubbleFree) {
  for (const char* name : {"zb-v", "dualpipe-v"}) {
    for (int p : {2, 4}) {
      const int m = 4 * p;
      // Each chunk is half a stage.
      const Timeline t = Simulate(Make(name, p, m),
                                  {.forward = 0.5, .backward_input = 0.5, .backward_weight = 0.5});
      const double one_f_one_b = Simulate(Make("1f1b", p, m), kFusedBackward).bubble_fraction;
      EXPECT_LT(t.bubble_fraction, one_f_one_b / 4) << name << " p " << p;
    }
  }
}

// DualPipe-V idles only while filling and draining the V: the same time whatever the
// micro-batches, at most DeepSeek's published (PP/2 - 1)(F&B + B - 3W) per rank with PP = 2p
// stages, B the full backward (B + W here) and F&B = F + B + W (run one after the other), so the
// bubble fraction falls towards zero as micro-batches grow.
TEST(PipelineSchedules, DualPipeVIdlesOnlyToFillAndDrain) {
  for (const OpCosts& c : {OpCosts{.forward = 1, .backward_input = 1, .backward_weight = 1},
                           OpCosts{.forward = 3, .backward_input = 2, .backward_weight = 1},
                           OpCosts{.forward = 1, .backward_input = 2, .backward_weight = 1}}) {
    for (int p : {2, 3, 4}) {
      const double fill = BubbleTime(Simulate(Make("dualpipe-v", p, 2 * p), c));
      const double published = (p - 1) * (c.forward + 2 * c.backward_input - c.backward_weight);
      EXPECT_LE(fill / p, published + 1e-9) << "p " << p;
      for (int m : {4 * p, 8 * p}) {
        EXPECT_NEAR(BubbleTime(Simulate(Make("dualpipe-v", p, m), c)), fill, 1e-9)
            << "p " << p << " m " << m;
      }
    }
  }
}

TEST(PipelineSchedules, PeakStashesStayWithinTheMemoryBounds) {
  const int p = 4, m = 8;
  const Timeline one = Simulate(Make("1f1b", p, m), {});
  const Timeline h1 = Simulate(Make("zb-h1", p, m), {});
  const Timeline v = Simulate(Make("zb-v", p, m), {});
  const Timeline gpipe = Simulate(Make("gpipe", p, m), {});
  const Timeline dualpipe = Simulate(Make("dualpipe-v", p, m), {});
  for (int r = 0; r < p; ++r) {
    EXPECT_EQ(dualpipe.peak_stashes[r], 2 * p + 1) << "dualpipe-v rank " << r;  // DeepSeek: PP + 1
    EXPECT_EQ(one.peak_stashes[r], p - r) << "1f1b rank " << r;
    EXPECT_EQ(h1.peak_stashes[r], 2 * p - r - 1) << "zb-h1 rank " << r;
    EXPECT_LE(v.peak_stashes[r], 2 * p) << "zb-v rank " << r;
    EXPECT_EQ(gpipe.peak_stashes[r], m) << "gpipe rank " << r;
  }
}

// 1F1B holds p - r stashes after its steady-state F; the B that follows adds what W still needs,
// freed with the rest at its W.
TEST(PipelineSimulator, PeakStashBytesAddFAndBUntilW) {
  const int p = 4, m = 8;
  OpCosts c;
  for (int stage = 0; stage < p; ++stage) {
    c.stash_bytes[{OpKind::kForward, stage}] = 100.0 * (stage + 1);
    c.stash_bytes[{OpKind::kBackwardInput, stage}] = 7.0;
  }
  const Timeline t = Simulate(Make("1f1b", p, m), c);
  for (int r = 0; r < p; ++r) {
    EXPECT_DOUBLE_EQ(t.peak_stash_bytes[r], (p - r) * 100.0 * (r + 1) + 7.0) << "rank " << r;
  }
}

TEST(PipelineSimulator, PerStageCostsOverrideTheUniformOnes) {
  // One micro-batch through 2 stages: F0, F1, B1, B0 run one after another; W costs 0.
  OpCosts c{.backward_weight = 0.0, .transfer = 0.5};
  c.by_stage = {{{OpKind::kForward, 0}, 1.0},
                {{OpKind::kForward, 1}, 2.0},
                {{OpKind::kBackwardInput, 1}, 3.0},
                {{OpKind::kBackwardInput, 0}, 4.0}};
  const Timeline t = Simulate(Make("1f1b", 2, 1), c);
  EXPECT_DOUBLE_EQ(t.step_time, 1 + 0.5 + 2 + 3 + 0.5 + 4);
  EXPECT_DOUBLE_EQ(t.busy[0], 5.0);
  EXPECT_DOUBLE_EQ(t.busy[1], 5.0);
}

// Hand-broken schedules, each rejected with what is wrong and where.
TEST(PipelineChecker, RejectsAMissingW) {
  Schedule s = Make("1f1b", 2, 2);
  auto& list = s.ranks[0];
  list.erase(std::find_if(list.begin(), list.end(), [](const Instr& i) {
    return i.kind == OpKind::kBackwardWeight && i.micro_batch == 1;
  }));
  EXPECT_THAT(std::string(CheckSchedule(s).message()), HasSubstr("rank 0: no W(mb 1, stage 0)"));
}

TEST(PipelineChecker, RejectsACrossedSendAndReceive) {
  Schedule s = Make("gpipe", 2, 2);
  auto& list = s.ranks[1];  // receives mb 1 before mb 0, which rank 0 sends first
  auto first = std::find_if(list.begin(), list.end(),
                            [](const Instr& i) { return i.kind == OpKind::kRecvActivation; });
  auto second = std::find_if(first + 1, list.end(),
                             [](const Instr& i) { return i.kind == OpKind::kRecvActivation; });
  std::swap(first->micro_batch, second->micro_batch);
  std::swap(*(first + 1), *(second + 1));  // the forwards follow their receives
  EXPECT_THAT(std::string(CheckSchedule(s).message()),
              HasSubstr("rank 1: recv_act(mb 1, stage 0 <- rank 0): crossed send/recv"));
}

TEST(PipelineChecker, RejectsAViolatedDependency) {
  Schedule s = Make("1f1b", 2, 2);
  auto& list = s.ranks[1];  // the last stage's B of mb 0 before its F
  auto f = std::find_if(list.begin(), list.end(), [](const Instr& i) {
    return i.kind == OpKind::kForward && i.micro_batch == 0;
  });
  auto b = std::find_if(list.begin(), list.end(), [](const Instr& i) {
    return i.kind == OpKind::kBackwardInput && i.micro_batch == 0;
  });
  std::iter_swap(f, b);
  EXPECT_THAT(std::string(CheckSchedule(s).message()),
              HasSubstr("rank 1: B(mb 0, stage 1): dependency violated: needs F(mb 0, stage 1)"));
}

TEST(PipelineChecker, ReportsADeadlockWithWhatEachRankWaitsFor) {
  Schedule s = Make("gpipe", 2, 1);
  auto& list = s.ranks[0];  // waits for the gradient before sending the activation it needs
  auto recv = std::find_if(list.begin(), list.end(),
                           [](const Instr& i) { return i.kind == OpKind::kRecvGradient; });
  const Instr moved = *recv;
  list.erase(recv);
  list.insert(list.begin(), moved);
  const std::string message(CheckSchedule(s).message());
  EXPECT_THAT(message, HasSubstr("deadlocks"));
  EXPECT_THAT(message, HasSubstr("rank 0 waits at recv_grad(mb 0, stage 1 <- rank 1)"));
  EXPECT_THAT(message, HasSubstr("rank 1 waits at recv_act(mb 0, stage 0 <- rank 0)"));
}

TEST(PipelineSchedules, BadOptionsSayWhatToChange) {
  EXPECT_THAT(std::string(MakeSchedule("zb-x", {.ranks = 2}).status().message()),
              HasSubstr("choose one of gpipe, 1f1b, interleaved, zb-h1, zb-v, dualpipe-v"));
  EXPECT_THAT(
      std::string(MakeSchedule("interleaved", {.ranks = 4, .micro_batches = 6}).status().message()),
      HasSubstr("needs --micro_batches a multiple of --pp 4, got 6; use 8"));
  EXPECT_THAT(
      std::string(MakeSchedule("dualpipe-v", {.ranks = 4, .micro_batches = 6}).status().message()),
      HasSubstr("needs --micro_batches >= 2 x --pp = 8, got 6"));
}

// DualPipe-V's pairs: each paired F is followed by its B, with both their receives before the F
// and both their sends after the B.
TEST(DualPipeV, PairsHaveTheirTransfersAroundBoth) {
  const Schedule s = Make("dualpipe-v", 4, 10);
  int pairs = 0, checked = 0;
  for (const std::vector<Instr>& list : s.ranks) {
    // Where the transfer of `kind` for (micro-batch, stage) is in this rank's list, or -1.
    auto at = [&](OpKind kind, int mb, int stage) -> int {
      for (size_t j = 0; j < list.size(); ++j) {
        if (list[j].kind == kind && list[j].micro_batch == mb && list[j].stage == stage) {
          return static_cast<int>(j);
        }
      }
      return -1;
    };
    for (size_t k = 0; k < list.size(); ++k) {
      if (!list[k].paired) continue;
      ++pairs;
      ASSERT_LT(k + 1, list.size());
      const Instr& f = list[k];
      const Instr& b = list[k + 1];
      ASSERT_EQ(b.kind, OpKind::kBackwardInput) << f.ToString();
      const int pair_start = static_cast<int>(k), pair_end = pair_start + 1;
      for (const auto& [kind, mb, stage, before] :
           {std::tuple{OpKind::kRecvActivation, f.micro_batch, f.stage - 1, true},
            std::tuple{OpKind::kRecvGradient, b.micro_batch, b.stage + 1, true},
            std::tuple{OpKind::kSendActivation, f.micro_batch, f.stage, false},
            std::tuple{OpKind::kSendGradient, b.micro_batch, b.stage, false}}) {
        const int j = at(kind, mb, stage);
        if (j < 0) continue;  // the neighbouring stage is on this rank
        ++checked;
        EXPECT_EQ(j < pair_start, before) << OpKindName(kind) << " of " << f.ToString();
        EXPECT_EQ(j > pair_end, !before) << OpKindName(kind) << " of " << f.ToString();
      }
    }
  }
  EXPECT_GT(pairs, 0);
  EXPECT_GT(checked, pairs);
  EXPECT_TRUE(CheckSchedule(s).ok());
}

// A StageRunner that logs each F, B and W and hands its turn over in the middle of each F and B,
// as a MoE layer does while its exchange travels.
class LoggingRunner : public StageRunner {
 public:
  Stash NewStash() const override { return Stash(); }
  runtime::Tensor Forward(Stash&, int mb, int stage, const runtime::Tensor&) override {
    Halves("F", mb, stage);
    return runtime::Tensor::Zeros({1}, runtime::DType::kF32, runtime::MemoryTag::kActivation);
  }
  runtime::Tensor BackwardInput(Stash&, int mb, int stage, const runtime::Tensor&) override {
    Halves("B", mb, stage);
    return runtime::Tensor::Zeros({1}, runtime::DType::kF32, runtime::MemoryTag::kActivation);
  }
  void BackwardWeight(Stash&, int mb, int stage) override { log.push_back(Name("W", mb, stage)); }
  runtime::Shape BoundaryShape() const override { return {1}; }

  static std::string Name(const char* op, int mb, int stage) {
    return absl::StrCat(op, mb, ".", stage);
  }
  std::vector<std::string> log;

 private:
  void Halves(const char* op, int mb, int stage) {
    log.push_back(Name(op, mb, stage) + " begins");
    YieldLane();
    log.push_back(Name(op, mb, stage) + " ends");
  }
};

// The executor runs a pair's F and B on two lanes (they take turns at the hand-over: F begins, B
// begins, F ends, B ends) with overlap_pairs, and everything in the schedule's order without.
TEST(DualPipeV, ExecutorRunsPairsOnTwoLanes) {
  const Schedule s = Make("dualpipe-v", 1, 4);
  ASSERT_TRUE(CheckSchedule(s).ok());
  std::unique_ptr<comm::Communicator> pp = std::move(comm::MakeLocalWorld(1)[0]);
  auto channels = Channels::Create(*pp, s.placement);
  ASSERT_TRUE(channels.ok()) << channels.status();
  for (bool overlap : {true, false}) {
    std::vector<std::string> want;  // from the schedule alone
    const std::vector<Instr>& list = s.ranks[0];
    for (size_t k = 0; k < list.size(); ++k) {
      const Instr& i = list[k];
      const char* op = i.kind == OpKind::kForward          ? "F"
                       : i.kind == OpKind::kBackwardInput  ? "B"
                       : i.kind == OpKind::kBackwardWeight ? "W"
                                                           : nullptr;
      if (op == nullptr) continue;
      const std::string name = LoggingRunner::Name(op, i.micro_batch, i.stage);
      if (i.kind == OpKind::kBackwardWeight) {
        want.push_back(name);
      } else if (i.paired && overlap) {
        const Instr& b = list[++k];
        const std::string b_name = LoggingRunner::Name("B", b.micro_batch, b.stage);
        want.insert(want.end(),
                    {name + " begins", b_name + " begins", name + " ends", b_name + " ends"});
      } else {
        want.insert(want.end(), {name + " begins", name + " ends"});
      }
    }
    LoggingRunner runner;
    Executor executor(s, 0, **channels, runner, {.overlap_pairs = overlap});
    ASSERT_TRUE(executor.RunStep().ok());
    EXPECT_EQ(runner.log, want) << "overlap " << overlap;
  }
}

}  // namespace
}  // namespace loom::parallel::pipeline
