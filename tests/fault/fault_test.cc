// The fault suite (ctest label `fault`, docs/faults.md): train_gpt under mpirun, hit by one fault
// per test, checking both what the user sees (exit code, the message naming the cause) and that
// nothing is lost: the last committed checkpoint verifies and resumes to the losses of a run that
// was never interrupted (bitwise on the same layout; within the equivalence tolerance on another).
//
// Every run is bounded by `timeout`; the faults are real signals sent to real ranks, and the
// file-system faults go through LOOM_FAULT (runtime/base/fault.h) or a small private tmpfs.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <optional>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "runtime/io/checkpoint.h"

namespace loom {
namespace {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

std::string ReadAll(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

size_t CountLines(const std::string& path) {
  std::ifstream f(path);
  size_t n = 0;
  for (std::string line; std::getline(f, line);) ++n;
  return n;
}

// The job's ranks: processes running train_gpt whose command line names `marker`, by
// OMPI_COMM_WORLD_RANK.
std::vector<std::pair<int, pid_t>> RankPids(const std::string& marker) {
  std::vector<std::pair<int, pid_t>> ranks;
  for (const fs::directory_entry& e : fs::directory_iterator("/proc")) {
    const std::string name = e.path().filename();
    if (name.find_first_not_of("0123456789") != std::string::npos) continue;
    std::error_code ec;
    const fs::path exe = fs::read_symlink(e.path() / "exe", ec);
    if (ec || exe.filename() != "train_gpt") continue;
    const std::string cmdline = ReadAll(e.path() / "cmdline");
    if (cmdline.find(marker) == std::string::npos) continue;
    const std::string env = ReadAll(e.path() / "environ");
    const std::string key = std::string("OMPI_COMM_WORLD_RANK=");
    const size_t at = env.find(key);
    if (at == std::string::npos) continue;
    ranks.emplace_back(std::stoi(env.substr(at + key.size())), std::stoi(name));
  }
  return ranks;
}

// A job started in the background: /bin/sh -c "exec <command>".
class Job {
 public:
  explicit Job(const std::string& command) {
    pid_ = fork();
    if (pid_ == 0) {
      execl("/bin/sh", "sh", "-c", ("exec " + command).c_str(), static_cast<char*>(nullptr));
      _exit(127);
    }
  }
  ~Job() {
    if (pid_ > 0 && !exit_code_.has_value()) {
      kill(pid_, SIGKILL);
      waitpid(pid_, nullptr, 0);
    }
  }
  // The exit code, or nullopt if the job is still running after `limit`.
  std::optional<int> Wait(std::chrono::seconds limit) {
    const Clock::time_point end = Clock::now() + limit;
    while (!exit_code_.has_value() && Clock::now() < end) {
      int status = 0;
      if (waitpid(pid_, &status, WNOHANG) == pid_) {
        exit_code_ = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
      } else {
        std::this_thread::sleep_for(std::chrono::milliseconds(20));
      }
    }
    return exit_code_;
  }
  pid_t pid() const { return pid_; }

 private:
  pid_t pid_ = -1;
  std::optional<int> exit_code_;
};

class FaultTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ =
        fs::path(::testing::TempDir()) /
        ("fault_" + std::string(::testing::UnitTest::GetInstance()->current_test_info()->name()));
    fs::remove_all(dir_);
    fs::create_directories(dir_);
  }
  void TearDown() override {
    if (!HasFailure()) fs::remove_all(dir_);
  }

  std::string Path(const std::string& name) const { return (dir_ / name).string(); }

  // The mpirun command line for `ranks` ranks of train_gpt with `args`, stdout and stderr into
  // <tag>.out / <tag>.err, bounded by `timeout`; `env` (NAME=value ...) is exported to the ranks.
  std::string MpiCommand(int ranks, const std::string& args, const std::string& tag,
                         const std::string& env = "") const {
    std::string exports = " -x LOOM_NUM_THREADS -x LOOM_COMM_TIMEOUT_S";
    std::istringstream vars(env);
    for (std::string var; vars >> var;) exports += " -x " + var.substr(0, var.find('='));
    return "env LOOM_NUM_THREADS=1 LOOM_COMM_TIMEOUT_S=30 " + env +
           " timeout 300 " LOOM_MPIEXEC " --allow-run-as-root --oversubscribe" + exports + " -np " +
           std::to_string(ranks) + " " LOOM_TRAIN_GPT " " + args + " --peak_gflops 1 >" +
           Path(tag + ".out") + " 2>" + Path(tag + ".err");
  }

  struct Result {
    int rc;
    std::string out;
    std::string err;
  };
  Result RunMpi(int ranks, const std::string& args, const std::string& tag,
                const std::string& env = "") const {
    const int status = std::system(MpiCommand(ranks, args, tag, env).c_str());
    return {WEXITSTATUS(status), ReadAll(Path(tag + ".out")), ReadAll(Path(tag + ".err"))};
  }

  // Starts `args` on `ranks` ranks in the background; returns once the metrics file (which args
  // must name: Path(tag + ".jsonl")) has `lines` steps.
  std::unique_ptr<Job> StartAndWaitForSteps(int ranks, const std::string& args,
                                            const std::string& tag, size_t lines) {
    auto job = std::make_unique<Job>(MpiCommand(ranks, args, tag));
    const Clock::time_point end = Clock::now() + std::chrono::seconds(120);
    while (CountLines(Path(tag + ".jsonl")) < lines && Clock::now() < end) {
      if (job->Wait(std::chrono::seconds(0)).has_value()) break;
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    return job;
  }

  // Sends `signal` to rank `rank` of the job whose command line names this test's directory.
  void SignalRank(int rank, int signal) const {
    for (const auto& [r, pid] : RankPids(dir_.string())) {
      if (r == rank) {
        ASSERT_EQ(kill(pid, signal), 0);
        return;
      }
    }
    FAIL() << "rank " << rank << " not found";
  }

  std::vector<nlohmann::json> ReadMetrics(const std::string& tag) const {
    std::vector<nlohmann::json> out;
    std::ifstream f(Path(tag + ".jsonl"));
    for (std::string line; std::getline(f, line);) out.push_back(nlohmann::json::parse(line));
    return out;
  }

  // The losses of `got` (steps after a resume) equal those of `reference` at the same steps.
  static void ExpectSameLosses(const std::vector<nlohmann::json>& got,
                               const std::vector<nlohmann::json>& reference, double tolerance) {
    ASSERT_FALSE(got.empty());
    for (const nlohmann::json& m : got) {
      const int64_t step = m["step"].get<int64_t>();
      ASSERT_GE(step, 1);
      ASSERT_LE(step, static_cast<int64_t>(reference.size()));
      const double want = reference[step - 1]["loss"].get<double>();
      if (tolerance == 0.0) {
        EXPECT_EQ(m["loss"].get<double>(), want) << "step " << step;
      } else {
        EXPECT_NEAR(m["loss"].get<double>(), want, tolerance) << "step " << step;
      }
    }
  }

  // Committed checkpoints in `save_dir`, as step numbers.
  // The names in `dir` that start with `prefix`, sorted.
  static std::vector<std::string> NamesWithPrefix(const std::string& dir,
                                                  const std::string& prefix) {
    std::vector<std::string> names;
    for (const fs::directory_entry& e : fs::directory_iterator(dir)) {
      const std::string name = e.path().filename();
      if (name.rfind(prefix, 0) == 0) names.push_back(name);
    }
    std::sort(names.begin(), names.end());
    return names;
  }

  // Committed checkpoints in `save_dir`, as step numbers (oldest first).
  static std::vector<int64_t> CommittedSteps(const std::string& save_dir) {
    std::vector<int64_t> steps;
    for (const std::string& name : NamesWithPrefix(save_dir, "step-")) {
      if (fs::exists(fs::path(save_dir) / name / "COMMIT"))
        steps.push_back(std::stoll(name.substr(5)));
    }
    return steps;
  }

  // What interrupted saves left behind.
  static std::vector<std::string> Leftovers(const std::string& save_dir) {
    return NamesWithPrefix(save_dir, ".tmp");
  }

  // Every segment loom made in /dev/shm (named /loom-*): none outlives its job.
  static std::vector<std::string> LoomShmSegments() { return NamesWithPrefix("/dev/shm", "loom-"); }

  fs::path dir_;
};

// The tiny preset on 2 ranks for 300 steps, slowed so a signal lands mid-run (the delay changes
// no value), checkpointing every 100 steps.
constexpr int kSteps = 300;
std::string TinyArgs(const std::string& save_dir, const std::string& metrics) {
  return "--preset tiny --steps " + std::to_string(kSteps) +
         " --zero 1 --save_every 100 --keep_checkpoints 2 --inject_straggler_ms 3 "
         "--inject_straggler_rank 0 --save_dir " +
         save_dir + " --metrics_out " + metrics;
}

// 1. A rank killed mid-step (SIGKILL): the other rank ends within the comm timeout plus a margin
// with a message naming the dead rank and the collective; nothing is left in /dev/shm or as a
// temporary file; resuming from the last checkpoint (on the same and on another layout) matches
// the uninterrupted run.
TEST_F(FaultTest, RankKilledMidStep) {
  const std::vector<std::string> shm_before = LoomShmSegments();
  const Result reference = RunMpi(2, TinyArgs(Path("ref_ckpt"), Path("ref.jsonl")), "ref");
  ASSERT_EQ(reference.rc, 0) << reference.err;
  const std::vector<nlohmann::json> ref = ReadMetrics("ref");
  ASSERT_EQ(ref.size(), static_cast<size_t>(kSteps));

  std::unique_ptr<Job> job =
      StartAndWaitForSteps(2, TinyArgs(Path("ckpt"), Path("a.jsonl")), "a", 150);
  SignalRank(1, SIGKILL);
  const Clock::time_point killed = Clock::now();
  const std::optional<int> rc = job->Wait(std::chrono::seconds(60));
  ASSERT_TRUE(rc.has_value()) << "the job did not end within 60 s of losing a rank";
  EXPECT_LE(Clock::now() - killed, std::chrono::seconds(30 + 10));  // LOOM_COMM_TIMEOUT_S + margin
  EXPECT_NE(*rc, 0);
  const std::string err = ReadAll(Path("a.err"));
  // Rank 0 names the dead rank and the collective it was waiting in.
  EXPECT_NE(err.find("rank 1 (pid"), std::string::npos) << err;
  EXPECT_NE(err.find("has exited while this rank waited for it"), std::string::npos) << err;
  EXPECT_TRUE(err.find("AllReduce(") != std::string::npos ||
              err.find("AllGather(") != std::string::npos ||
              err.find("ReduceScatter(") != std::string::npos)
      << err;
  EXPECT_EQ(LoomShmSegments(), shm_before);
  EXPECT_TRUE(Leftovers(Path("ckpt")).empty());
  ASSERT_EQ(CommittedSteps(Path("ckpt")), std::vector<int64_t>{100});

  fs::copy(Path("ckpt"), Path("ckpt1"), fs::copy_options::recursive);
  // Resumed on the same layout: bitwise the uninterrupted run.
  const Result resumed = RunMpi(
      2, TinyArgs(Path("ckpt"), Path("b.jsonl")) + " --resume --export " + Path("b.safetensors"),
      "b");
  ASSERT_EQ(resumed.rc, 0) << resumed.err;
  const std::vector<nlohmann::json> b = ReadMetrics("b");
  ASSERT_EQ(b.size(), static_cast<size_t>(kSteps - 100));
  EXPECT_EQ(b.front()["step"].get<int64_t>(), 101);
  ExpectSameLosses(b, ref, 0.0);

  // 8. Resumed under another layout (one rank, ZeRO off): the killed run's checkpoint continues
  // within the equivalence tolerance of data parallelism (tests/parallel/dp_checks.h).
  const Result single = RunMpi(1,
                               "--preset tiny --steps " + std::to_string(kSteps) +
                                   " --save_every 100 --resume --save_dir " + Path("ckpt1") +
                                   " --metrics_out " + Path("c.jsonl"),
                               "c");
  ASSERT_EQ(single.rc, 0) << single.err;
  EXPECT_NE(single.out.find("resumed from " + Path("ckpt1") + "/step-00000100"), std::string::npos)
      << single.out;
  const std::vector<nlohmann::json> c = ReadMetrics("c");
  ASSERT_EQ(c.size(), static_cast<size_t>(kSteps - 100));
  ExpectSameLosses(std::vector<nlohmann::json>(c.begin(), c.begin() + 20), ref, 5e-5);
}

// 2. Preemption: SIGTERM to one rank, or SIGUSR1 to mpirun (which forwards it to every rank),
// makes every rank finish its step, write a checkpoint and exit 0; the resumed run is bitwise
// the run never stopped, exported weights included.
TEST_F(FaultTest, PreemptionCheckpointsAndResumesBitwise) {
  const Result reference = RunMpi(
      2, TinyArgs(Path("ref_ckpt"), Path("ref.jsonl")) + " --export " + Path("ref.safetensors"),
      "ref");
  ASSERT_EQ(reference.rc, 0) << reference.err;
  const std::vector<nlohmann::json> ref = ReadMetrics("ref");

  for (const bool to_mpirun : {false, true}) {
    SCOPED_TRACE(to_mpirun ? "SIGUSR1 to mpirun" : "SIGTERM to rank 1");
    const std::string save = Path(to_mpirun ? "ckpt_usr1" : "ckpt_term");
    fs::remove(Path("a.jsonl"));
    fs::remove(Path("b.jsonl"));
    std::unique_ptr<Job> job = StartAndWaitForSteps(2, TinyArgs(save, Path("a.jsonl")), "a", 130);
    if (to_mpirun) {
      // The job is `timeout` -> mpirun: signal mpirun, the timeout's child.
      const std::string pgrep = "pgrep -P " + std::to_string(job->pid());
      FILE* p = popen(pgrep.c_str(), "r");
      int mpirun = 0;
      ASSERT_EQ(fscanf(p, "%d", &mpirun), 1);
      pclose(p);
      ASSERT_EQ(kill(mpirun, SIGUSR1), 0);
    } else {
      SignalRank(1, SIGTERM);
    }
    const std::optional<int> rc = job->Wait(std::chrono::seconds(60));
    ASSERT_TRUE(rc.has_value());
    EXPECT_EQ(*rc, 0) << ReadAll(Path("a.err"));
    const std::vector<nlohmann::json> a = ReadMetrics("a");
    ASSERT_FALSE(a.empty());
    const int64_t stopped = a.back()["step"].get<int64_t>();
    ASSERT_LT(stopped, kSteps) << "the signal arrived after the run ended";
    const std::string out = ReadAll(Path("a.out"));
    EXPECT_NE(out.find(to_mpirun ? "stopped by SIGUSR1 on rank " : "stopped by SIGTERM on rank 1"),
              std::string::npos)
        << out;
    EXPECT_NE(out.find(" after step " + std::to_string(stopped) + ": saved checkpoint to " + save),
              std::string::npos)
        << out;
    ASSERT_EQ(CommittedSteps(save).back(), stopped);

    const Result resumed = RunMpi(
        2, TinyArgs(save, Path("b.jsonl")) + " --resume --export " + Path("b.safetensors"), "b");
    ASSERT_EQ(resumed.rc, 0) << resumed.err;
    const std::vector<nlohmann::json> b = ReadMetrics("b");
    ASSERT_EQ(b.size(), static_cast<size_t>(kSteps - stopped));
    ExpectSameLosses(b, ref, 0.0);
    EXPECT_EQ(ReadAll(Path("b.safetensors")), ReadAll(Path("ref.safetensors")));
  }
}

// 3. A rank killed while saving (after the files, before COMMIT): the partial checkpoint is never
// taken for a complete one; the next start removes it, says so, and resumes from the previous one.
TEST_F(FaultTest, KilledWhileSavingResumesFromThePreviousCheckpoint) {
  const Result reference = RunMpi(2, TinyArgs(Path("ref_ckpt"), Path("ref.jsonl")), "ref");
  ASSERT_EQ(reference.rc, 0) << reference.err;
  const Result killed = RunMpi(2, TinyArgs(Path("ckpt"), Path("a.jsonl")), "a",
                               "LOOM_FAULT=checkpoint.commit:kill:step-00000200");
  EXPECT_NE(killed.rc, 0);
  EXPECT_EQ(CommittedSteps(Path("ckpt")), std::vector<int64_t>{100});
  EXPECT_EQ(Leftovers(Path("ckpt")), std::vector<std::string>{".tmp-step-00000200"});
  const Result resumed = RunMpi(2, TinyArgs(Path("ckpt"), Path("b.jsonl")) + " --resume", "b");
  ASSERT_EQ(resumed.rc, 0) << resumed.err;
  EXPECT_NE(resumed.out.find("removed " + Path("ckpt") + "/.tmp-step-00000200, left by a save"),
            std::string::npos)
      << resumed.out;
  EXPECT_NE(resumed.out.find("resumed from " + Path("ckpt") + "/step-00000100"), std::string::npos);
  EXPECT_TRUE(Leftovers(Path("ckpt")).empty());
  ExpectSameLosses(ReadMetrics("b"), ReadMetrics("ref"), 0.0);
}

// 4. A write error while saving. A periodic checkpoint that fails (disk full) is reported on every
// rank's behalf by rank 0, naming the file, and training goes on: the earlier checkpoints stay
// intact, the next interval saves again. The final checkpoint failing (EIO) fails the run.
TEST_F(FaultTest, WriteErrorWhileSaving) {
  const Result full = RunMpi(2, TinyArgs(Path("ckpt"), Path("a.jsonl")) + " --keep_checkpoints 0",
                             "a", "LOOM_FAULT=file.write:ENOSPC:step-00000200");
  ASSERT_EQ(full.rc, 0) << full.err;
  EXPECT_NE(full.err.find("the checkpoint of step 200 was not saved"), std::string::npos)
      << full.err;
  EXPECT_NE(full.err.find(Path("ckpt") + "/.tmp-step-00000200/model.safetensors"),
            std::string::npos);
  EXPECT_NE(full.err.find("No space left on device"), std::string::npos);
  EXPECT_EQ(CommittedSteps(Path("ckpt")), (std::vector<int64_t>{100, 300}));
  EXPECT_TRUE(Leftovers(Path("ckpt")).empty());
  EXPECT_EQ(ReadMetrics("a").size(), static_cast<size_t>(kSteps));

  const Clock::time_point start = Clock::now();
  const Result broken = RunMpi(2, TinyArgs(Path("ckpt2"), Path("b.jsonl")), "b",
                               "LOOM_FAULT=file.write:EIO:step-00000300");
  EXPECT_EQ(broken.rc, 1);
  // Every rank fails with the writer's error at once (none waits out the comm timeout for a
  // writer that gave up).
  EXPECT_LT(Clock::now() - start, std::chrono::seconds(25));
  const std::string failed = "saving checkpoint step 300 to " + Path("ckpt2") +
                             "/step-00000300: " + Path("ckpt2") +
                             "/.tmp-step-00000300/model.safetensors";
  const size_t first = broken.err.find(failed);
  ASSERT_NE(first, std::string::npos) << broken.err;
  EXPECT_NE(broken.err.find(failed, first + 1), std::string::npos) << broken.err;
  EXPECT_NE(broken.err.find("Input/output error"), std::string::npos);
  EXPECT_EQ(CommittedSteps(Path("ckpt2")), (std::vector<int64_t>{100, 200}));
  EXPECT_TRUE(Leftovers(Path("ckpt2")).empty());
}

// 4b. The same with a real full file system: a 3 MiB tmpfs in a private mount namespace holds two
// checkpoints of the tiny model (about 1.3 MB each) but not a third.
TEST_F(FaultTest, RealFullFileSystem) {
  if (std::system("unshare -m true 2>/dev/null") != 0) {
    GTEST_SKIP() << "no private mount namespace here (unshare -m refused)";
  }
  const std::string save = Path("small");
  fs::create_directories(save);
  const std::string script = Path("full.sh");
  std::ofstream(script) << "mount -t tmpfs -o size=3m tmpfs " << save << " && "
                        << MpiCommand(2, TinyArgs(save, Path("a.jsonl")) + " --keep_checkpoints 0",
                                      "a")
                        << " ; rc=$?; ls -a " << save << " > " << Path("listing.txt")
                        << "; exit $rc\n";
  const int status = std::system(("unshare -m --propagation private sh " + script).c_str());
  const std::string err = ReadAll(Path("a.err"));
  // The final save fails: the run fails, naming the file and the full disk.
  EXPECT_EQ(WEXITSTATUS(status), 1) << err;
  EXPECT_NE(err.find("No space left on device"), std::string::npos) << err;
  const std::string listing = ReadAll(Path("listing.txt"));
  EXPECT_NE(listing.find("step-00000100"), std::string::npos) << listing;
  EXPECT_NE(listing.find("step-00000200"), std::string::npos) << listing;
  EXPECT_EQ(listing.find("step-00000300"), std::string::npos) << listing;
  EXPECT_EQ(listing.find(".tmp"), std::string::npos) << listing;
}

// 5. A straggler (one rank 150 ms late in every step, far below the comm timeout): the job
// completes with the same losses, and the step log names the slow rank and its delay.
TEST_F(FaultTest, StragglerIsReported) {
  const std::string args = "--preset tiny --steps 6 --metrics_out ";
  const Result even = RunMpi(2, args + Path("a.jsonl"), "a");
  ASSERT_EQ(even.rc, 0) << even.err;
  const Result slow = RunMpi(
      2, args + Path("b.jsonl") + " --inject_straggler_ms 150 --inject_straggler_rank 1", "b");
  ASSERT_EQ(slow.rc, 0) << slow.err;
  ExpectSameLosses(ReadMetrics("b"), ReadMetrics("a"), 0.0);
  for (const nlohmann::json& m : ReadMetrics("b")) {
    EXPECT_EQ(m["slowest_rank"].get<int>(), 1);
    EXPECT_GE(m["slowest_rank_excess_ms"].get<double>(), 120.0);
    EXPECT_LE(m["slowest_rank_excess_ms"].get<double>(), 400.0);
  }
  EXPECT_NE(slow.out.find("| slowest rank 1 +1"), std::string::npos) << slow.out;
}

// 6. Non-finite gradients (an Inf injected on rank 0 only, after the reduction, so the decision
// must travel): fp32 and bf16 skip up to --nonfinite_skips steps in a row on every rank and go on;
// one more in a row stops the run on every rank, naming the step and the parameter.
TEST_F(FaultTest, NonFiniteGradientsSkipThenStop) {
  for (const std::string precision : {"fp32", "bf16"}) {
    SCOPED_TRACE(precision);
    const std::string args = "--preset tiny --steps 8 --precision " + precision +
                             " --inject_overflow_step 5 --nonfinite_skips 2 --metrics_out ";
    fs::remove(Path("a.jsonl"));
    const Result skipped = RunMpi(2, args + Path("a.jsonl") + " --inject_overflow_count 2", "a");
    ASSERT_EQ(skipped.rc, 0) << skipped.err;
    const std::vector<nlohmann::json> a = ReadMetrics("a");
    ASSERT_EQ(a.size(), 10u);  // 8 steps and 2 skipped tries of step 5
    for (int i = 4; i < 6; ++i) {
      EXPECT_TRUE(a[i]["skipped"].get<bool>()) << i;
      EXPECT_EQ(a[i]["step"].get<int64_t>(), 4) << i;  // no update: still after step 4
    }
    EXPECT_FALSE(a[6]["skipped"].get<bool>());
    EXPECT_EQ(a.back()["step"].get<int64_t>(), 8);
    EXPECT_NE(skipped.err.find("step 5: non-finite loss or gradients, step skipped"),
              std::string::npos);

    const std::string save = Path("ckpt_" + precision);
    const std::string saving = " --save_every 2 --save_dir " + save;
    const Result stopped =
        RunMpi(2, args + Path("b.jsonl") + " --inject_overflow_count 3" + saving, "b");
    EXPECT_EQ(stopped.rc, 1);
    const std::string message =
        "step 5: non-finite loss or gradients 3 times in a row (--nonfinite_skips 2); first "
        "parameter with a non-finite gradient: wte.weight";
    // Every rank stops with the same message.
    const size_t first = stopped.err.find(message);
    ASSERT_NE(first, std::string::npos) << stopped.err;
    EXPECT_NE(stopped.err.find(message, first + 1), std::string::npos) << stopped.err;

    // Nothing lost: the last checkpoint (step 4, before the bad steps) resumes to the losses of
    // a run that never saw them.
    EXPECT_EQ(CommittedSteps(save), (std::vector<int64_t>{2, 4}));
    const std::string clean =
        "--preset tiny --steps 8 --precision " + precision + " --metrics_out ";
    fs::remove(Path("r.jsonl"));
    fs::remove(Path("c.jsonl"));
    ASSERT_EQ(RunMpi(2, clean + Path("r.jsonl"), "r").rc, 0);
    const Result resumed = RunMpi(2, clean + Path("c.jsonl") + saving + " --resume", "c");
    ASSERT_EQ(resumed.rc, 0) << resumed.err;
    ASSERT_EQ(ReadMetrics("c").size(), 4u);
    ExpectSameLosses(ReadMetrics("c"), ReadMetrics("r"), 0.0);
  }
}

// 7. A small /dev/shm (64 MiB, Docker's default; a private tmpfs in a private mount namespace):
// training runs, warns naming the fallback, and computes the same losses.
TEST_F(FaultTest, SmallDevShm) {
  if (std::system("unshare -m true 2>/dev/null") != 0) {
    GTEST_SKIP() << "no private mount namespace here (unshare -m refused)";
  }
  const std::string args = "--preset cpu-small --num_layers 2 --batch 4 --steps 3 --metrics_out ";
  const Result normal = RunMpi(2, args + Path("a.jsonl"), "a");
  ASSERT_EQ(normal.rc, 0) << normal.err;
  const std::string script = Path("small_shm.sh");
  std::ofstream(script) << "mount -t tmpfs -o size=64m tmpfs /dev/shm && "
                        << MpiCommand(2, args + Path("b.jsonl"), "b") << "\n";
  const int status = std::system(("unshare -m --propagation private sh " + script).c_str());
  const std::string err = ReadAll(Path("b.err"));
  ASSERT_EQ(WEXITSTATUS(status), 0) << err;
  EXPECT_NE(err.find("does not fit the communicator's shared arena"), std::string::npos) << err;
  EXPECT_NE(err.find("comes from the heap and takes the staged collective paths"),
            std::string::npos);
  ExpectSameLosses(ReadMetrics("b"), ReadMetrics("a"), 0.0);
}

}  // namespace
}  // namespace loom
