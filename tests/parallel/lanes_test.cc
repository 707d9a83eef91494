#include "parallel/lanes.h"

#include <gtest/gtest.h>

#include <string>
#include <thread>
#include <vector>

#include "runtime/base/logging.h"

namespace loom::parallel {
namespace {

// A lane that logs "<name><i>" for i in [0, stretches), yielding between consecutive entries.
std::function<void()> Logger(std::vector<std::string>& log, const std::string& name,
                             int stretches) {
  return [&log, name, stretches] {
    for (int i = 0; i < stretches; ++i) {
      if (i > 0) YieldLane();
      log.push_back(name + std::to_string(i));
    }
  };
}

TEST(LanesTest, LanesTakeTurnsAtEveryYield) {
  Lanes lanes;
  std::vector<std::string> log;
  lanes.Run({Logger(log, "a", 3), Logger(log, "b", 3)}, /*interleave=*/true);
  EXPECT_EQ(log, (std::vector<std::string>{"a0", "b0", "a1", "b1", "a2", "b2"}));
}

TEST(LanesTest, ThreeLanesGoRoundRobin) {
  Lanes lanes;
  std::vector<std::string> log;
  lanes.Run({Logger(log, "a", 2), Logger(log, "b", 2), Logger(log, "c", 2)}, true);
  EXPECT_EQ(log, (std::vector<std::string>{"a0", "b0", "c0", "a1", "b1", "c1"}));
}

TEST(LanesTest, ALaneThatFinishesLeavesTheTurnToTheOthers) {
  Lanes lanes;
  std::vector<std::string> log;
  // b finishes after its second stretch; a's later yields find no other lane and keep going.
  lanes.Run({Logger(log, "a", 4), Logger(log, "b", 2)}, true);
  EXPECT_EQ(log, (std::vector<std::string>{"a0", "b0", "a1", "b1", "a2", "a3"}));
  log.clear();
  lanes.Run({Logger(log, "a", 1), Logger(log, "b", 3)}, true);
  EXPECT_EQ(log, (std::vector<std::string>{"a0", "b0", "b1", "b2"}));
}

TEST(LanesTest, WithoutInterleavingLanesRunOneAfterAnother) {
  Lanes lanes;
  std::vector<std::string> log;
  lanes.Run({Logger(log, "a", 3), Logger(log, "b", 3)}, /*interleave=*/false);
  EXPECT_EQ(log, (std::vector<std::string>{"a0", "a1", "a2", "b0", "b1", "b2"}));
}

TEST(LanesTest, YieldOutsideLanesDoesNothing) {
  YieldLane();  // returns at once
  std::vector<std::string> log;
  Logger(log, "x", 3)();
  EXPECT_EQ(log, (std::vector<std::string>{"x0", "x1", "x2"}));
}

TEST(LanesTest, LaneZeroRunsOnTheCallerAndHelpersPersistAcrossRuns) {
  Lanes lanes;
  std::thread::id first_helper, second_helper, lane0;
  lanes.Run({[&] { lane0 = std::this_thread::get_id(); },
             [&] { first_helper = std::this_thread::get_id(); }},
            true);
  lanes.Run({[] {}, [&] { second_helper = std::this_thread::get_id(); }}, true);
  EXPECT_EQ(lane0, std::this_thread::get_id());
  EXPECT_NE(first_helper, std::this_thread::get_id());
  EXPECT_EQ(first_helper, second_helper);
}

TEST(LanesTest, HelpersLogAsTheCallersRank) {
  base::SetThreadRank(5);
  Lanes lanes;
  int seen = -1;
  lanes.Run({[] {}, [&] { seen = base::CurrentRank(); }}, true);
  base::SetThreadRank(-1);
  EXPECT_EQ(seen, 5);
}

TEST(LanesTest, ManyRunsOfManyYieldsComplete) {
  Lanes lanes;
  for (int run = 0; run < 50; ++run) {
    std::vector<std::string> log;
    lanes.Run({Logger(log, "a", 20), Logger(log, "b", 20)}, true);
    ASSERT_EQ(log.size(), 40u) << "run " << run;
    EXPECT_EQ(log[39], "b19");
  }
}

}  // namespace
}  // namespace loom::parallel
