// End-to-end tests of the train_gpt program (run as a subprocess under `timeout`):
//  - tiny preset on the embedded task: held-out eval loss below kSyntheticLossThreshold after 300
//    steps, starting above 3 nats (so the test fails if nothing is learned);
//  - the metrics file has one complete object per step;
//  - resume: 20 steps straight vs 10 + save + resume + 10 gives bitwise identical losses and
//    byte-identical exported weights;
//  - corrupted checkpoints and weight files fail with a clear error and train nothing;
//  - bad flags and data files fail with messages that say what to change;
//  - under mpirun (2 ranks, ZeRO-1, bf16) the tiny preset learns the task and reports memory per
//    rank; a layout that does not fit the job, or ranks started with different flags, fail on
//    every rank with a message naming what to change.
#include <gtest/gtest.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <vector>

#include "models/data/synthetic_task.h"
#include "runtime/io/safetensors.h"

namespace loom {
namespace {

namespace fs = std::filesystem;

struct Result {
  int rc;
  std::string out;
  std::string err;
};

std::string ReadAll(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

class TrainGptTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::path(::testing::TempDir()) /
           ("train_gpt_" +
            std::string(::testing::UnitTest::GetInstance()->current_test_info()->name()));
    fs::remove_all(dir_);
    fs::create_directories(dir_);
  }

  std::string Path(const std::string& name) const { return (dir_ / name).string(); }

  // Runs train_gpt with `args` under a 300 s timeout and 2 threads.
  Result Run(const std::string& args) const {
    const std::string out = Path("stdout.txt"), err = Path("stderr.txt");
    const std::string cmd =
        "LOOM_NUM_THREADS=2 timeout 300 " LOOM_TRAIN_GPT " " + args + " >" + out + " 2>" + err;
    const int status = std::system(cmd.c_str());
    return {WEXITSTATUS(status), ReadAll(out), ReadAll(err)};
  }

  // Runs `mpirun <launch>` (e.g. "-np 2 train_gpt --zero 1", with LOOM_TRAIN_GPT spelled out by the
  // caller through Gpt()) under a 300 s timeout, one thread per rank.
  Result RunMpi(const std::string& launch) const {
    const std::string out = Path("stdout.txt"), err = Path("stderr.txt");
    const std::string cmd = "LOOM_NUM_THREADS=1 timeout 300 " LOOM_MPIEXEC
                            " --allow-run-as-root --oversubscribe -x LOOM_NUM_THREADS " +
                            launch + " >" + out + " 2>" + err;
    const int status = std::system(cmd.c_str());
    return {WEXITSTATUS(status), ReadAll(out), ReadAll(err)};
  }
  static std::string Gpt() { return LOOM_TRAIN_GPT; }
  // RunMpi of `launch` with --trace into `name`, and the trace it wrote (empty if it failed).
  nlohmann::json RunMpiTrace(const std::string& launch, const std::string& name) const {
    const Result run = RunMpi(launch + " --trace " + Path(name));
    EXPECT_EQ(run.rc, 0) << run.err;
    return run.rc == 0 ? nlohmann::json::parse(ReadAll(Path(name))) : nlohmann::json::object();
  }

  std::vector<nlohmann::json> ReadMetrics(const std::string& path) const {
    std::vector<nlohmann::json> out;
    std::ifstream f(path);
    for (std::string line; std::getline(f, line);) out.push_back(nlohmann::json::parse(line));
    return out;
  }

  // Two exports hold the same tensors (names, order, shapes) with values within `tolerance`.
  static void ExpectSameWeights(const std::string& a, const std::string& b, double tolerance) {
    auto wa = runtime::io::ReadSafetensors(a);
    auto wb = runtime::io::ReadSafetensors(b);
    ASSERT_TRUE(wa.ok() && wb.ok());
    ASSERT_EQ(wa->tensors.size(), wb->tensors.size());
    for (size_t t = 0; t < wa->tensors.size(); ++t) {
      ASSERT_EQ(wa->tensors[t].name, wb->tensors[t].name);
      ASSERT_EQ(wa->tensors[t].tensor.shape(), wb->tensors[t].tensor.shape())
          << wa->tensors[t].name;
      const std::vector<float> x = wa->tensors[t].tensor.ToF32Vector();
      const std::vector<float> y = wb->tensors[t].tensor.ToF32Vector();
      for (size_t i = 0; i < x.size(); ++i) {
        ASSERT_NEAR(y[i], x[i], tolerance) << wa->tensors[t].name << "[" << i << "]";
      }
    }
  }

  // Resumes the step-10 checkpoint in ckpt/ (the step-20 one removed) on one rank with `common`
  // flags: steps 11-20 within 5e-5 of the single-rank run's `a`.
  void ExpectStep10ResumesOnOneRank(const std::string& common,
                                    const std::vector<nlohmann::json>& a) const {
    fs::remove_all(Path("ckpt/step-00000020"));
    const Result resumed =
        Run(common + "--resume --save_dir " + Path("ckpt") + " --metrics_out " + Path("c.jsonl"));
    ASSERT_EQ(resumed.rc, 0) << resumed.err;
    const std::vector<nlohmann::json> c = ReadMetrics(Path("c.jsonl"));
    ASSERT_EQ(c.size(), 10u);
    for (int i = 0; i < 10; ++i) {
      EXPECT_NEAR(c[i]["loss"].get<double>(), a[10 + i]["loss"].get<double>(), 5e-5)
          << "step " << 11 + i;
    }
  }

  fs::path dir_;
};

TEST_F(TrainGptTest, TinyPresetLearnsTheEmbeddedTask) {
  const Result train = Run("--preset tiny --steps 300 --lr 3e-3 --warmup_steps 20 --metrics_out " +
                           Path("m.jsonl") + " --export " + Path("w.safetensors"));
  ASSERT_EQ(train.rc, 0) << train.err;
  const std::vector<nlohmann::json> m = ReadMetrics(Path("m.jsonl"));
  ASSERT_EQ(m.size(), 300u);
  for (size_t i = 0; i < m.size(); ++i) {
    EXPECT_EQ(m[i]["step"], i + 1);
    for (const char* key :
         {"loss", "lr", "grad_norm", "step_ms", "tokens_per_s", "gflops", "mfu"}) {
      ASSERT_TRUE(m[i].contains(key)) << key << " missing at step " << i + 1;
    }
  }
  EXPECT_GT(m.front()["loss"].get<double>(), 3.0) << "an untrained model should be near ln 64";
  const Result eval = Run("--preset tiny --eval --eval_batches 8 --init_from " +
                          Path("w.safetensors") + " --metrics_out " + Path("e.jsonl"));
  ASSERT_EQ(eval.rc, 0) << eval.err;
  const std::vector<nlohmann::json> e = ReadMetrics(Path("e.jsonl"));
  ASSERT_EQ(e.size(), 1u);
  const double eval_loss = e[0]["eval_loss"].get<double>();
  EXPECT_LT(eval_loss, models::data::kSyntheticLossThreshold) << eval.out;
  EXPECT_GE(eval_loss, models::data::kSyntheticLossFloor - 0.02) << "below the entropy floor?";
  EXPECT_NE(eval.out.find("eval_loss"), std::string::npos);
}

TEST_F(TrainGptTest, ResumeIsBitwiseIdentical) {
  const std::string common = "--preset tiny --lr 3e-3 --warmup_steps 5 --batch 4 ";
  ASSERT_EQ(Run(common + "--steps 20 --metrics_out " + Path("a.jsonl") + " --export " +
                Path("a.safetensors"))
                .rc,
            0);
  const Result first = Run(common + "--steps 20 --save_every 10 --save_dir " + Path("ckpt") +
                           " --metrics_out " + Path("b1.jsonl"));
  ASSERT_EQ(first.rc, 0) << first.err;
  // Keep only the step-10 checkpoint, as if the run had stopped there.
  fs::remove_all(Path("ckpt/step-00000020"));
  ASSERT_TRUE(fs::exists(Path("ckpt/step-00000010/COMMIT")));
  const Result resumed =
      Run(common + "--steps 20 --resume --save_dir " + Path("ckpt") + " --metrics_out " +
          Path("b2.jsonl") + " --export " + Path("b.safetensors"));
  ASSERT_EQ(resumed.rc, 0) << resumed.err;
  EXPECT_NE(resumed.out.find("resumed from"), std::string::npos);
  const std::vector<nlohmann::json> a = ReadMetrics(Path("a.jsonl"));
  const std::vector<nlohmann::json> b = ReadMetrics(Path("b2.jsonl"));
  ASSERT_EQ(a.size(), 20u);
  ASSERT_EQ(b.size(), 10u);
  for (int i = 0; i < 10; ++i) {
    EXPECT_EQ(b[i]["step"], 11 + i);
    EXPECT_EQ(b[i]["loss"].get<float>(), a[10 + i]["loss"].get<float>()) << "step " << 11 + i;
    EXPECT_EQ(b[i]["grad_norm"].get<double>(), a[10 + i]["grad_norm"].get<double>());
  }
  EXPECT_EQ(ReadAll(Path("a.safetensors")), ReadAll(Path("b.safetensors")))
      << "final weights differ";
}

class CorruptCheckpointTest : public TrainGptTest {
 protected:
  // Trains 3 steps into ckpt/step-00000003 and returns that directory.
  std::string MakeCheckpoint() {
    EXPECT_EQ(Run("--preset tiny --steps 3 --batch 2 --save_dir " + Path("ckpt")).rc, 0);
    return Path("ckpt/step-00000003");
  }
  // --resume must fail naming `expected` and take no step.
  void ExpectResumeFails(const std::string& expected) {
    const Result r = Run("--preset tiny --steps 6 --batch 2 --resume --save_dir " + Path("ckpt"));
    EXPECT_NE(r.rc, 0);
    EXPECT_NE(r.err.find(expected), std::string::npos) << r.err;
    EXPECT_EQ(r.out.find("step "), std::string::npos) << "trained on a corrupt checkpoint";
  }
};

TEST_F(CorruptCheckpointTest, TruncatedFile) {
  const std::string dir = MakeCheckpoint();
  fs::resize_file(dir + "/model.safetensors", fs::file_size(dir + "/model.safetensors") / 2);
  ExpectResumeFails("model.safetensors");
}

TEST_F(CorruptCheckpointTest, FlippedByte) {
  const std::string dir = MakeCheckpoint();
  std::fstream f(dir + "/optimizer.safetensors", std::ios::in | std::ios::out | std::ios::binary);
  f.seekg(5000);
  char c;
  f.read(&c, 1);
  c ^= 0x10;
  f.seekp(5000);
  f.write(&c, 1);
  f.close();
  ExpectResumeFails("optimizer.safetensors");
}

TEST_F(CorruptCheckpointTest, MissingCommitMarker) {
  const std::string dir = MakeCheckpoint();
  fs::remove(dir + "/COMMIT");
  const Result r = Run("--preset tiny --steps 6 --batch 2 --resume --save_dir " + Path("ckpt"));
  EXPECT_NE(r.rc, 0);
  EXPECT_NE(r.err.find("checkpoint"), std::string::npos) << r.err;
}

TEST_F(CorruptCheckpointTest, AbsurdHeaderLengthInWeights) {
  std::ofstream f(Path("bad.safetensors"), std::ios::binary);
  const uint64_t absurd = uint64_t{1} << 60;
  f.write(reinterpret_cast<const char*>(&absurd), 8);
  f << "{}";
  f.close();
  const Result r = Run("--preset tiny --steps 2 --init_from " + Path("bad.safetensors"));
  EXPECT_NE(r.rc, 0);
  EXPECT_NE(r.err.find("bad.safetensors"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("header"), std::string::npos) << r.err;
}

TEST_F(TrainGptTest, HelpListsTheFlagsAndExitsZero) {
  const Result r = Run("--help");
  EXPECT_EQ(r.rc, 0) << r.err;
  for (const char* flag : {"--zero [0]", "--precision [fp32]", "--batch [8]", "--comm [shm]"}) {
    EXPECT_NE(r.out.find(flag), std::string::npos) << flag << " missing from:\n" << r.out;
  }
}

TEST_F(TrainGptTest, BadInputsSayWhatToChange) {
  struct Case {
    std::string args;
    std::string expected;
  };
  const std::vector<Case> cases = {
      {"--no_such_flag", "Unknown command line flag 'no_such_flag'"},
      {"--steps abc", "Illegal value 'abc' specified for flag 'steps'"},
      {"--batch 0", "--batch must be >= 1"},
      {"--preset huge", "unknown GPT preset 'huge'"},
      {"--seq_len 65", "--seq_len 65 exceeds the context length 64"},
      {"--resume", "--resume needs --save_dir"},
      {"--optimizer lion", "--optimizer must be adamw or sgd"},
      {"--data " + Path("missing.bin"), "missing.bin"},
      {"--eval --eval_batches 0", "--eval_batches must be >= 1"},
      {"extra_positional", "unexpected argument 'extra_positional'"},
      {"--device tpu", "--device must be cpu or cuda, got 'tpu'"},
      {"--attention fast", "--attention must be probs or flash, got 'fast'"},
      {"--comm nccl", "--comm nccl moves device tensors: it needs --device cuda"},
  };
  for (const Case& c : cases) {
    const Result r = Run(c.args + " --steps 1");
    EXPECT_NE(r.rc, 0) << c.args;
    EXPECT_NE(r.err.find(c.expected), std::string::npos) << c.args << "\n" << r.err;
  }
}

// --device cuda trains on a GPU where there is one (the step lines, MFU against the GPU's bf16
// peak, the device's memory; a mixture-of-experts preset too), and otherwise says what is missing.
TEST_F(TrainGptTest, DeviceCudaTrainsOrSaysWhatIsMissing) {
  const Result r = Run("--device cuda --preset tiny --steps 2 --batch 4");
  if (r.rc == 0) {
    EXPECT_NE(r.out.find("| device "), std::string::npos) << r.out;
    EXPECT_NE(r.out.find("dense bf16 of"), std::string::npos) << r.out;
    EXPECT_NE(r.out.find("step     2"), std::string::npos) << r.out;
    const Result moe = Run("--device cuda --preset tiny-moe --steps 2 --batch 4");
    EXPECT_EQ(moe.rc, 0) << moe.err;
    EXPECT_NE(moe.out.find("step     2"), std::string::npos) << moe.out;
    return;
  }
  EXPECT_TRUE(r.err.find("no CUDA device is visible") != std::string::npos ||
              r.err.find("this build has no CUDA backend") != std::string::npos)
      << r.err;
}

TEST_F(TrainGptTest, TextFileNeedsAByteVocabulary) {
  std::ofstream(Path("text.txt")) << std::string(20000, 'a') + "hello loom, hello world\n";
  const Result small = Run("--data " + Path("text.txt") + " --steps 1");
  EXPECT_NE(small.rc, 0);
  EXPECT_NE(small.err.find("pass --vocab_size 256"), std::string::npos) << small.err;
  const Result ok = Run("--data " + Path("text.txt") + " --vocab_size 256 --steps 2");
  EXPECT_EQ(ok.rc, 0) << ok.err;
}

TEST_F(TrainGptTest, DataParallelRunUnderMpirunLearnsTheEmbeddedTask) {
  const Result train =
      RunMpi("-np 2 " + Gpt() +
             " --preset tiny --steps 300 --lr 3e-3 --warmup_steps 20 --zero 1 --precision bf16"
             " --metrics_out " +
             Path("m.jsonl") + " --export " + Path("w.safetensors"));
  ASSERT_EQ(train.rc, 0) << train.err;
  EXPECT_NE(train.out.find("layout dp 2 x tp 1 x pp 1 x ep 1"), std::string::npos) << train.out;
  EXPECT_NE(train.out.find("rank 1 memory now: param"), std::string::npos) << train.out;
  const std::vector<nlohmann::json> m = ReadMetrics(Path("m.jsonl"));
  ASSERT_EQ(m.size(), 300u) << "one writer (rank 0), one line per step";
  for (const auto& line : m) {
    ASSERT_EQ(line["peak_bytes_per_rank"].size(), 2u);
    EXPECT_GT(line["peak_bytes_per_rank"][1]["param"].get<int64_t>(), 0);
  }
  const Result eval = Run("--preset tiny --eval --eval_batches 8 --init_from " +
                          Path("w.safetensors") + " --metrics_out " + Path("e.jsonl"));
  ASSERT_EQ(eval.rc, 0) << eval.err;
  const std::vector<nlohmann::json> e = ReadMetrics(Path("e.jsonl"));
  ASSERT_EQ(e.size(), 1u);
  EXPECT_LT(e[0]["eval_loss"].get<double>(), models::data::kSyntheticLossThreshold) << eval.out;
}

TEST_F(TrainGptTest, BadLayoutsFailOnEveryRankBeforeTraining) {
  Result r = RunMpi("-np 2 " + Gpt() + " --steps 2 --dp 3");
  EXPECT_NE(r.rc, 0);
  EXPECT_EQ(r.out.find("step "), std::string::npos);
  // Both ranks report it (each prints one line).
  size_t at = r.err.find("multiply to 2"), count = 0;
  for (; at != std::string::npos; at = r.err.find("multiply to 2", at + 1)) ++count;
  EXPECT_EQ(count, 2u) << r.err;
  r = RunMpi("-np 2 " + Gpt() + " --steps 2 --batch 7");
  EXPECT_NE(r.rc, 0);
  EXPECT_NE(r.err.find("--batch 7 must be a multiple of --dp 2 x --grad_accum 1"),
            std::string::npos)
      << r.err;
}

// train_gpt --tp under mpirun: tp 2 × dp 2 (ZeRO-1) reproduces the single-rank run (losses and
// the exported whole weights, within the tensor-parallel fp32 tolerance kTpF32Tolerance of
// tests/parallel/dp_checks.h: 5e-5 and 1e-4), and its step-10 checkpoint resumes on one rank.
TEST_F(TrainGptTest, TensorParallelRunMatchesOneRankAndResumesOnOne) {
  const std::string common =
      " --preset tiny --vocab_size 67 --lr 3e-3 --warmup_steps 2 --seq_len 32 --steps 20 ";
  ASSERT_EQ(
      Run(common + "--metrics_out " + Path("a.jsonl") + " --export " + Path("a.safetensors")).rc,
      0);
  const Result tp = RunMpi(
      "-np 4 " + Gpt() + common + "--tp 2 --zero 1 --save_every 10 --save_dir " + Path("ckpt") +
      " --metrics_out " + Path("b.jsonl") + " --export " + Path("b.safetensors"));
  ASSERT_EQ(tp.rc, 0) << tp.err;
  EXPECT_NE(tp.out.find("layout dp 2 x tp 2 x pp 1 x ep 1"), std::string::npos) << tp.out;
  const std::vector<nlohmann::json> a = ReadMetrics(Path("a.jsonl"));
  const std::vector<nlohmann::json> b = ReadMetrics(Path("b.jsonl"));
  ASSERT_EQ(a.size(), 20u);
  ASSERT_EQ(b.size(), 20u);
  for (size_t i = 0; i < a.size(); ++i) {
    EXPECT_NEAR(b[i]["loss"].get<double>(), a[i]["loss"].get<double>(), 5e-5) << "step " << i + 1;
  }
  // The export holds whole tensors under the same names and shapes as the single-rank one.
  ExpectSameWeights(Path("a.safetensors"), Path("b.safetensors"), 1e-4);
  ExpectStep10ResumesOnOneRank(common, a);
}

// train_gpt --pp under mpirun: zb-v at pp 2, and 1f1b at pp 2 x tp 2 with sequence parallelism,
// reproduce the single-rank run with the same micro-batches (gradient accumulation), within the
// fp32 and tensor-parallel tolerances of the equivalence tests; --trace writes the last step's
// ops of both ranks.
TEST_F(TrainGptTest, PipelineRunMatchesOneRank) {
  const std::string common = " --preset tiny --num_layers 4 --lr 3e-3 --seq_len 32 --steps 10 ";
  ASSERT_EQ(Run(common + "--grad_accum 4 --metrics_out " + Path("a.jsonl")).rc, 0);
  const Result pp =
      RunMpi("-np 2 " + Gpt() + common + "--pp 2 --schedule zb-v --micro_batches 4 --metrics_out " +
             Path("b.jsonl") + " --trace " + Path("trace.json"));
  ASSERT_EQ(pp.rc, 0) << pp.err;
  EXPECT_NE(pp.out.find("layout dp 1 x tp 1 x pp 2 x ep 1"), std::string::npos) << pp.out;
  EXPECT_NE(pp.out.find("schedule zb-v, 4 micro-batches"), std::string::npos) << pp.out;
  const std::vector<nlohmann::json> a = ReadMetrics(Path("a.jsonl"));
  const std::vector<nlohmann::json> b = ReadMetrics(Path("b.jsonl"));
  ASSERT_EQ(a.size(), 10u);
  ASSERT_EQ(b.size(), 10u);
  for (size_t i = 0; i < a.size(); ++i) {
    EXPECT_NEAR(b[i]["loss"].get<double>(), a[i]["loss"].get<double>(), 5e-6) << "step " << i + 1;
  }
  // The trace of the last step: every F, B and W of 4 micro-batches x 4 stages, on its rank.
  const nlohmann::json trace = nlohmann::json::parse(ReadAll(Path("trace.json")));
  std::map<std::string, int> ops;
  for (const auto& e : trace["traceEvents"]) {
    if (e["ph"] == "X")
      ops[e["cat"].get<std::string>() + " rank " + std::to_string(e["tid"].get<int>())]++;
  }
  for (const char* op : {"F", "B", "W"}) {
    for (int r = 0; r < 2; ++r) {
      EXPECT_EQ(ops[std::string(op) + " rank " + std::to_string(r)], 8) << op << " rank " << r;
    }
  }
  const Result pp_tp =
      RunMpi("-np 4 " + Gpt() + common + "--pp 2 --tp 2 --sequence_parallel --micro_batches 4 " +
             "--metrics_out " + Path("c.jsonl"));
  ASSERT_EQ(pp_tp.rc, 0) << pp_tp.err;
  EXPECT_NE(pp_tp.out.find("layout dp 1 x tp 2 x pp 2 x ep 1"), std::string::npos) << pp_tp.out;
  const std::vector<nlohmann::json> c = ReadMetrics(Path("c.jsonl"));
  ASSERT_EQ(c.size(), 10u);
  for (size_t i = 0; i < a.size(); ++i) {
    EXPECT_NEAR(c[i]["loss"].get<double>(), a[i]["loss"].get<double>(), 5e-5) << "step " << i + 1;
  }
}

// Checkpoints and exports of a pipeline run hold every stage's tensors whole, as one rank's do:
// the pp 2 export equals the single-rank one (same micro-batches), a pp run resumes bitwise from
// its own checkpoint, and one rank resumes from the pipeline's (and a pipeline from one rank's).
TEST_F(TrainGptTest, PipelineCheckpointsAndExportsAreLayoutFree) {
  const std::string common =
      " --preset tiny --num_layers 4 --lr 3e-3 --warmup_steps 2 --seq_len 32 --steps 20 "
      "--save_every 10 ";
  const std::string one = " --grad_accum 4 ", pp = " --pp 2 --schedule zb-v --micro_batches 4 ";
  ASSERT_EQ(Run(common + one + "--save_dir " + Path("a") + " --metrics_out " + Path("a.jsonl") +
                " --export " + Path("a.safetensors"))
                .rc,
            0);
  const Result piped =
      RunMpi("-np 2 " + Gpt() + common + pp + "--save_dir " + Path("b") + " --metrics_out " +
             Path("b.jsonl") + " --export " + Path("b.safetensors"));
  ASSERT_EQ(piped.rc, 0) << piped.err;
  ExpectSameWeights(Path("a.safetensors"), Path("b.safetensors"), 1e-5);  // in the model's order
  const std::vector<nlohmann::json> a = ReadMetrics(Path("a.jsonl"));
  const std::vector<nlohmann::json> b = ReadMetrics(Path("b.jsonl"));
  ASSERT_EQ(a.size(), 20u);
  ASSERT_EQ(b.size(), 20u);
  fs::copy(Path("b"), Path("b2"), fs::copy_options::recursive);
  fs::copy(Path("a"), Path("a2"), fs::copy_options::recursive);
  for (const char* dir : {"a", "b", "a2", "b2"}) fs::remove_all(Path(dir) + "/step-00000020");
  const Result resumed = RunMpi("-np 2 " + Gpt() + common + pp + "--resume --save_dir " +
                                Path("b") + " --metrics_out " + Path("c.jsonl"));
  ASSERT_EQ(resumed.rc, 0) << resumed.err;
  const Result one_from_pp =
      Run(common + one + "--resume --save_dir " + Path("b2") + " --metrics_out " + Path("d.jsonl"));
  ASSERT_EQ(one_from_pp.rc, 0) << one_from_pp.err;
  const Result pp_from_one = RunMpi(
      "-np 2 " + Gpt() + common + " --pp 2 --schedule 1f1b --micro_batches 4 --resume --save_dir " +
      Path("a2") + " --metrics_out " + Path("e.jsonl"));
  ASSERT_EQ(pp_from_one.rc, 0) << pp_from_one.err;
  const std::vector<nlohmann::json> c = ReadMetrics(Path("c.jsonl"));
  const std::vector<nlohmann::json> d = ReadMetrics(Path("d.jsonl"));
  const std::vector<nlohmann::json> e = ReadMetrics(Path("e.jsonl"));
  ASSERT_EQ(c.size(), 10u);
  ASSERT_EQ(d.size(), 10u);
  ASSERT_EQ(e.size(), 10u);
  for (int i = 0; i < 10; ++i) {
    EXPECT_EQ(c[i]["loss"].get<double>(), b[10 + i]["loss"].get<double>()) << "step " << 11 + i;
    EXPECT_NEAR(d[i]["loss"].get<double>(), a[10 + i]["loss"].get<double>(), 5e-6);
    EXPECT_NEAR(e[i]["loss"].get<double>(), a[10 + i]["loss"].get<double>(), 5e-6);
  }
}

// Peak activation memory of a pipeline rank, measured by the allocator's accounting (the trace's
// held_bytes after every op), equals the simulator's prediction from the bytes each F and B adds
// to a stash (Stash::activation_bytes, in the same trace) composed by the schedule: stashes
// freed exactly at their W, nothing else held. 1F1B and ZB-V, pp 2. Also the simulated trace
// (pipeline_schedule --trace_out) holds the same ops as the measured one.
TEST_F(TrainGptTest, PipelinePeakStashBytesAreTheSimulators) {
  for (const std::string schedule : {"1f1b", "zb-v"}) {
    const std::string trace = Path(schedule + ".json");
    const Result run = RunMpi("-np 2 " + Gpt() +
                              " --preset tiny --num_layers 4 --seq_len 32 --steps 2 --pp 2 "
                              "--micro_batches 4 --schedule " +
                              schedule + " --trace " + trace);
    ASSERT_EQ(run.rc, 0) << run.err;
    const std::string out = Path("sim.txt");
    const std::string simulated = Path(schedule + ".simulated.json");
    const std::string cmd = std::string(LOOM_PIPELINE_SCHEDULE) + " --pp 2 --micro_batches 4 " +
                            "--schedule " + schedule + " --measured " + trace + " --trace_out " +
                            simulated + " >" + out;
    ASSERT_EQ(std::system(cmd.c_str()), 0) << cmd;
    // --trace_out: the simulated timeline in the same format, with the same ops as the measured.
    std::map<std::string, int> ops[2];
    for (int t = 0; t < 2; ++t) {
      const nlohmann::json json = nlohmann::json::parse(ReadAll(t == 0 ? trace : simulated));
      for (const auto& e : json["traceEvents"]) {
        if (e["ph"] == "X") ops[t][e["name"].get<std::string>()]++;
      }
    }
    EXPECT_EQ(ops[0], ops[1]) << schedule;
    EXPECT_EQ(ops[1]["W3 s1"], 1) << schedule;
    std::istringstream lines(ReadAll(out));
    int ranks = 0;
    for (std::string line; std::getline(lines, line);) {
      int rank = -1;
      long long measured = -1, simulated = -2;
      if (std::sscanf(line.c_str(), "  rank %d peak stash bytes: measured %lld, simulated %lld",
                      &rank, &measured, &simulated) != 3) {
        continue;
      }
      ++ranks;
      EXPECT_GT(measured, 0) << schedule << " rank " << rank;
      EXPECT_EQ(measured, simulated) << schedule << " rank " << rank;
    }
    EXPECT_EQ(ranks, 2) << ReadAll(out);
  }
}

// pp 2 x dp 2: the trace holds every rank's optimizer step and, on a second track per rank, its
// data-parallel gradient reductions, each launched before it completed and before the
// optimizer step ended.
TEST_F(TrainGptTest, PipelineTraceShowsTheDataParallelReductions) {
  const nlohmann::json trace =
      RunMpiTrace("-np 4 " + Gpt() +
                      " --preset tiny --num_layers 4 --seq_len 32 --steps 2 --pp 2 --dp 2 --zero 1 "
                      "--bucket_mb 0.01",
                  "dp.json");
  ASSERT_TRUE(trace.contains("traceEvents"));
  std::map<int, int> reductions;
  std::map<int, double> optimizer_end;
  for (const auto& e : trace["traceEvents"]) {
    if (e["ph"] != "X") continue;
    if (e["cat"] == "optimizer_step")
      optimizer_end[e["tid"].get<int>()] = e["ts"].get<double>() + e["dur"].get<double>();
  }
  for (const auto& e : trace["traceEvents"]) {
    if (e["ph"] != "X" || e["cat"] != "dp_reduce") continue;
    const int rank = e["args"]["rank"].get<int>();
    EXPECT_EQ(e["tid"].get<int>(), 4 + rank) << "reductions go on the rank's second track";
    EXPECT_GE(e["dur"].get<double>(), 1.0);
    EXPECT_LE(e["ts"].get<double>() + e["dur"].get<double>(), optimizer_end[rank] + 1.0);
    ++reductions[rank];
  }
  ASSERT_EQ(optimizer_end.size(), 4u);
  for (int r = 0; r < 4; ++r) EXPECT_GT(reductions[r], 1) << "rank " << r;
}

// Data parallelism without a pipeline (dp 2, ZeRO-1, 2 micro-batches): each rank's track holds
// F0 B0 F1 B1 in turn, then the optimizer step; its dp track every bucket's gradient reduction
// (on the last micro-batch, ended by the end of the optimizer step) and every bucket's all-gather
// of the updated parameters (issued in the first forward and complete before it ends).
TEST_F(TrainGptTest, DataParallelTraceShowsComputeReductionsAndGathers) {
  const nlohmann::json trace = RunMpiTrace(
      "-np 2 " + Gpt() +
          " --preset tiny --seq_len 32 --steps 2 --dp 2 --zero 1 --grad_accum 2 --bucket_mb 0.01",
      "ddp.json");
  ASSERT_TRUE(trace.contains("traceEvents"));
  struct Box {
    double start, end;
  };
  std::map<int, std::vector<std::pair<std::string, Box>>> compute;  // by rank, in time order
  std::map<int, std::map<std::string, std::vector<Box>>> comm;      // by rank and category
  for (const auto& e : trace["traceEvents"]) {
    if (e["ph"] != "X") continue;
    const Box box{e["ts"].get<double>(), e["ts"].get<double>() + e["dur"].get<double>()};
    const int tid = e["tid"].get<int>();
    if (tid < 2) {
      compute[tid].emplace_back(e["name"].get<std::string>(), box);
    } else {
      EXPECT_EQ(e["args"]["rank"].get<int>(), tid - 2);
      comm[tid - 2][e["cat"].get<std::string>()].push_back(box);
    }
  }
  for (int r = 0; r < 2; ++r) {
    auto& ops = compute[r];
    std::sort(ops.begin(), ops.end(),
              [](const auto& a, const auto& b) { return a.second.start < b.second.start; });
    std::vector<std::string> names;
    for (const auto& [name, box] : ops) names.push_back(name);
    ASSERT_EQ(names,
              (std::vector<std::string>{"F0 s0", "B0 s0", "F1 s0", "B1 s0", "optimizer_step"}))
        << "rank " << r;
    for (size_t i = 1; i < ops.size(); ++i) {
      EXPECT_GE(ops[i].second.start + 1.0, ops[i - 1].second.end) << "rank " << r << " op " << i;
    }
    const std::vector<Box>& reduces = comm[r]["dp_reduce"];
    const std::vector<Box>& gathers = comm[r]["dp_gather"];
    EXPECT_GT(reduces.size(), 1u) << "rank " << r;
    EXPECT_EQ(gathers.size(), reduces.size()) << "rank " << r << ": a gather per bucket";
    for (const Box& b : reduces) {
      EXPECT_GE(b.start + 1.0, ops[3].second.start) << "reduced in the last micro-batch";
      EXPECT_LE(b.end, ops[4].second.end + 1.0);
    }
    for (const Box& b : gathers) {
      EXPECT_GE(b.start + 1.0, ops[0].second.start);
      EXPECT_LE(b.end, ops[0].second.end + 1.0) << "gathered before the first forward ended";
    }
  }
}

TEST_F(TrainGptTest, BadTensorParallelLayoutsFailOnEveryRankWithWhatToChange) {
  Result r = RunMpi("-np 4 " + Gpt() + " --preset cpu-small --tp 4 --steps 2");
  EXPECT_NE(r.rc, 0);
  EXPECT_EQ(r.out.find("step "), std::string::npos);
  // Every rank fails the same way before any collective (tests/parallel checks each rank); with 4
  // ranks on 2 cores mpirun may stop some before they print.
  EXPECT_NE(r.err.find("tp=4 does not divide the 6 heads of cpu-small; choose tp in {1, 2, 3, 6}"),
            std::string::npos)
      << r.err;
  r = RunMpi("-np 2 " + Gpt() + " --tp 4 --steps 2");
  EXPECT_NE(r.err.find("--tp 4 x --pp 1 does not divide the 2 ranks of the job"), std::string::npos)
      << r.err;
}

// train_gpt --ep under mpirun: the tiny MoE at ep 2 x dp 2 (ZeRO-1) reproduces the single-rank
// run (losses and the exported whole weights, experts included, within the tensor-parallel fp32
// tolerance), the step's expert loads add up to tokens x top-k (8 x 32 x 2 slots), and its
// step-10 checkpoint resumes on one rank.
TEST_F(TrainGptTest, ExpertParallelRunMatchesOneRankAndResumesOnOne) {
  const std::string common = " --preset tiny-moe --lr 3e-3 --seq_len 32 --steps 20 ";
  ASSERT_EQ(
      Run(common + "--metrics_out " + Path("a.jsonl") + " --export " + Path("a.safetensors")).rc,
      0);
  const Result ep = RunMpi("-np 4 " + Gpt() + common + "--ep 2 --zero 1 --save_every 10 " +
                           "--save_dir " + Path("ckpt") + " --metrics_out " + Path("b.jsonl") +
                           " --export " + Path("b.safetensors"));
  ASSERT_EQ(ep.rc, 0) << ep.err;
  EXPECT_NE(ep.out.find("layout dp 2 x tp 1 x pp 1 x ep 2"), std::string::npos) << ep.out;
  EXPECT_NE(ep.out.find("expert load max/mean"), std::string::npos) << ep.out;
  const std::vector<nlohmann::json> a = ReadMetrics(Path("a.jsonl"));
  const std::vector<nlohmann::json> b = ReadMetrics(Path("b.jsonl"));
  ASSERT_EQ(a.size(), 20u);
  ASSERT_EQ(b.size(), 20u);
  for (size_t i = 0; i < a.size(); ++i) {
    EXPECT_NEAR(b[i]["loss"].get<double>(), a[i]["loss"].get<double>(), 5e-5) << "step " << i + 1;
    const auto load = b[i]["expert_load"].get<std::vector<std::vector<int64_t>>>();
    ASSERT_EQ(load.size(), 1u);  // one MoE layer (layer 0 is dense)
    ASSERT_EQ(load[0].size(), 8u);
    int64_t slots = 0;
    for (int64_t l : load[0]) slots += l;
    EXPECT_EQ(slots, 8 * 32 * 2) << "step " << i + 1;
    EXPECT_EQ(b[i]["expert_load"], a[i]["expert_load"]) << "step " << i + 1;
  }
  ExpectSameWeights(Path("a.safetensors"), Path("b.safetensors"), 1e-4);
  ExpectStep10ResumesOnOneRank(common, a);
}

TEST_F(TrainGptTest, BadExpertParallelLayoutsFailBeforeTrainingWithWhatToChange) {
  Result r = RunMpi("-np 2 " + Gpt() + " --preset tiny --ep 2 --steps 2");
  EXPECT_NE(r.rc, 0);
  EXPECT_EQ(r.out.find("step "), std::string::npos);
  EXPECT_NE(r.err.find("need a mixture-of-experts model"), std::string::npos) << r.err;
  r = RunMpi("-np 3 " + Gpt() + " --preset tiny-moe --ep 3 --batch 9 --steps 2");
  EXPECT_NE(r.rc, 0);
  EXPECT_NE(r.err.find("--ep 3 must divide the 8 experts"), std::string::npos) << r.err;
  r = Run(" --preset tiny-moe --moe_groups 4 --moe_top_groups 1 --steps 2");  // top-2 of 2 experts
  EXPECT_EQ(r.rc, 0) << r.err;
  r = Run(" --preset tiny-moe --moe_groups 8 --moe_top_groups 1 --steps 2");
  EXPECT_NE(r.rc, 0);
  EXPECT_NE(r.err.find("of them must hold top-2 experts"), std::string::npos) << r.err;
}

TEST_F(TrainGptTest, RanksWithDifferentFlagsNameTheFlag) {
  const Result r =
      RunMpi("-np 1 " + Gpt() + " --steps 2 --batch 8 : -np 1 " + Gpt() + " --steps 2 --batch 16");
  EXPECT_NE(r.rc, 0);
  EXPECT_EQ(r.out.find("step "), std::string::npos);
  EXPECT_NE(r.err.find("batch (this rank, 1: '16') differs from rank 0 on rank(s) 1"),
            std::string::npos)
      << r.err;
}

}  // namespace
}  // namespace loom
