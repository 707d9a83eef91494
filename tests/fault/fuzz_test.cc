// Bounded mutation fuzzing of what loom reads from disk (issue #13): the safetensors parser, a
// checkpoint's MANIFEST + COMMIT, the trainer state (trainer.json) and the token-file reader. Each
// target starts from valid seed inputs built here, applies random mutations (bit flips, byte
// overwrites with boundary values, truncation, insertion, duplication of a span, rewriting length
// fields) and feeds every mutant to the parser: it must return (a value or an error with a
// message), never crash, hang or allocate without bound. Run under scripts/sanitize.sh asan it also
// finds memory errors. Deterministic (fixed seed) and bounded by iterations and time, so it runs in
// the ordinary suite.
#include <gtest/gtest.h>

#include <chrono>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "models/data/token_dataset.h"
#include "models/trainer.h"
#include "runtime/io/checkpoint.h"
#include "runtime/io/file.h"
#include "runtime/io/safetensors.h"

namespace loom {
namespace {

namespace fs = std::filesystem;
using runtime::DType;
using runtime::MemoryTag;
using runtime::Tensor;

constexpr std::chrono::seconds kTimeLimit{20};

// One random mutation of `in`.
std::string Mutate(const std::string& in, std::mt19937_64& rng) {
  std::string s = in;
  auto pick = [&](size_t n) { return n == 0 ? size_t{0} : static_cast<size_t>(rng() % n); };
  static const uint8_t kBoundary[] = {0x00, 0x01, 0x7f, 0x80, 0xff, '"', '{', '}',
                                      '[',  ']',  ',',  ':',  '-',  '9', 'e'};
  const int rounds = 1 + static_cast<int>(rng() % 4);
  for (int r = 0; r < rounds; ++r) {
    const int kind = static_cast<int>(rng() % 7);
    switch (kind) {
      case 0:  // flip a bit
        if (!s.empty()) s[pick(s.size())] ^= static_cast<char>(1u << (rng() % 8));
        break;
      case 1:  // a boundary byte
        if (!s.empty()) s[pick(s.size())] = static_cast<char>(kBoundary[pick(sizeof(kBoundary))]);
        break;
      case 2:  // truncate
        s.resize(pick(s.size() + 1));
        break;
      case 3:  // insert random bytes
        s.insert(pick(s.size() + 1), std::string(1 + pick(16), static_cast<char>(rng())));
        break;
      case 4: {  // duplicate a span
        if (s.empty()) break;
        const size_t at = pick(s.size()), n = 1 + pick(std::min<size_t>(64, s.size() - at));
        s.insert(pick(s.size() + 1), s.substr(at, n));
        break;
      }
      case 5:  // an extreme 64-bit little-endian value at the start (length fields)
      case 6: {
        if (s.size() < 8) break;
        const uint64_t values[] = {0,
                                   1,
                                   7,
                                   8,
                                   uint64_t{1} << 31,
                                   uint64_t{1} << 40,
                                   ~uint64_t{0},
                                   static_cast<uint64_t>(s.size()),
                                   static_cast<uint64_t>(rng())};
        const uint64_t v = values[pick(sizeof(values) / sizeof(values[0]))];
        const size_t at = kind == 5 ? 0 : pick(s.size() - 7);
        std::memcpy(s.data() + at, &v, 8);
        break;
      }
    }
  }
  return s;
}

// Runs `target` on the seeds and then on `iterations` mutants of them (at most kTimeLimit).
void Fuzz(int iterations, const std::vector<std::string>& seeds,
          const std::function<void(const std::string&)>& target) {
  std::mt19937_64 rng(20261203);
  for (const std::string& seed : seeds) target(seed);
  const auto end = std::chrono::steady_clock::now() + kTimeLimit;
  for (int i = 0; i < iterations && std::chrono::steady_clock::now() < end; ++i) {
    target(Mutate(seeds[i % seeds.size()], rng));
  }
}

std::string TempDir(const std::string& name) {
  const fs::path dir = fs::path(::testing::TempDir()) / ("loom_fuzz_" + name);
  fs::remove_all(dir);
  fs::create_directories(dir);
  return dir.string();
}

TEST(FuzzTest, SafetensorsParser) {
  Tensor a = Tensor::FromVector<float>({2, 3}, {1, 2, 3, 4, 5, 6}, MemoryTag::kParam);
  Tensor b = Tensor::FromVector<int32_t>({4}, {7, 8, 9, 10}, MemoryTag::kParam);
  Tensor empty = Tensor::Empty({0, 5}, DType::kF32, MemoryTag::kParam);
  std::vector<std::string> seeds;
  seeds.push_back(*runtime::io::SerializeSafetensors({{"a", a}, {"b.weight", b}}));
  seeds.push_back(*runtime::io::SerializeSafetensors({{"x", a}, {"e", empty}}, {{"format", "pt"}}));
  int accepted = 0;
  Fuzz(50000, seeds, [&](const std::string& bytes) {
    absl::StatusOr<runtime::io::SafetensorsFile> f = runtime::io::ParseSafetensors(bytes, "<fuzz>");
    if (f.ok()) {
      ++accepted;
      for (const runtime::io::NamedTensor& t : f->tensors) ASSERT_TRUE(t.tensor.defined());
    } else {
      ASSERT_FALSE(f.status().message().empty());
      ASSERT_NE(f.status().message().find("<fuzz>"), std::string::npos) << f.status();
    }
  });
  EXPECT_GE(accepted, static_cast<int>(seeds.size()));  // the seeds themselves parse
}

TEST(FuzzTest, CheckpointManifestAndCommit) {
  const std::string save = TempDir("checkpoint");
  ASSERT_TRUE(
      runtime::io::SaveCheckpoint(save, 5, {{"model.bin", "weights"}, {"state.json", "{}"}}).ok());
  const std::string dir = save + "/step-00000005";
  const std::string manifest = *runtime::io::ReadFile(dir + "/MANIFEST");
  const std::string commit = *runtime::io::ReadFile(dir + "/COMMIT");
  // Mutate MANIFEST and COMMIT together (a seed is both, split by a NUL).
  const std::string seed = manifest + std::string(1, '\0') + commit;
  int loaded = 0;
  Fuzz(3000, {seed}, [&](const std::string& both) {
    const size_t split = both.find('\0');
    const std::string m = both.substr(0, split);
    const std::string c = split == std::string::npos ? "" : both.substr(split + 1);
    std::ofstream(dir + "/MANIFEST", std::ios::binary | std::ios::trunc) << m;
    std::ofstream(dir + "/COMMIT", std::ios::binary | std::ios::trunc) << c;
    absl::StatusOr<runtime::io::LoadedCheckpoint> ckpt = runtime::io::LoadCheckpoint(dir);
    if (ckpt.ok()) {
      ++loaded;
      for (const auto& [name, bytes] : ckpt->files) {
        ASSERT_EQ(name.find('/'), std::string::npos) << name;  // never outside the directory
      }
    } else {
      ASSERT_NE(ckpt.status().message().find(dir), std::string::npos) << ckpt.status();
    }
  });
  EXPECT_GE(loaded, 1);
  fs::remove_all(save);
}

TEST(FuzzTest, TokenFileReader) {
  const std::string dir = TempDir("tokens");
  const std::string path = dir + "/shard.bin";
  ASSERT_TRUE(models::data::WriteLlmcShard(path, {1, 2, 3, 50256, 0, 7}).ok());
  const std::string shard = *runtime::io::ReadFile(path);
  Fuzz(3000, {shard}, [&](const std::string& bytes) {
    std::ofstream(path, std::ios::binary | std::ios::trunc) << bytes;
    absl::StatusOr<models::data::TokenDataset> d = models::data::LoadTokenFile(path);
    if (d.ok()) {
      ASSERT_GE(d->vocab_size(), 1);
    } else {
      ASSERT_NE(d.status().message().find(path), std::string::npos) << d.status();
    }
  });
  fs::remove_all(dir);
}

// trainer.json as Trainer::Create(--resume) reads it: every mutant is saved as a proper checkpoint
// (so it passes the checksums and reaches the parser) and resumed; the resume succeeds or fails
// with an error naming the file, never an exception.
TEST(FuzzTest, TrainerState) {
  const std::string save = TempDir("trainer");
  models::TrainOptions o;
  o.preset = "tiny";
  o.steps = 2;
  o.save_dir = save;
  {
    absl::StatusOr<std::unique_ptr<models::Trainer>> t = models::Trainer::Create(o);
    ASSERT_TRUE(t.ok()) << t.status();
    ASSERT_TRUE((*t)->Step().ok());
    ASSERT_TRUE((*t)->SaveCheckpoint().ok());
  }
  absl::StatusOr<runtime::io::LoadedCheckpoint> ckpt =
      runtime::io::LoadCheckpoint(save + "/step-00000001");
  ASSERT_TRUE(ckpt.ok()) << ckpt.status();
  o.resume = true;
  int resumed = 0;
  Fuzz(400, {ckpt->files.at("trainer.json")}, [&](const std::string& state) {
    ASSERT_TRUE(runtime::io::SaveCheckpoint(
                    save, 1,
                    {{"model.safetensors", ckpt->files.at("model.safetensors")},
                     {"optimizer.safetensors", ckpt->files.at("optimizer.safetensors")},
                     {"trainer.json", state}})
                    .ok());
    absl::StatusOr<std::unique_ptr<models::Trainer>> t = models::Trainer::Create(o);
    if (t.ok()) {
      ++resumed;
    } else {
      ASSERT_NE(t.status().message().find(save), std::string::npos) << t.status();
    }
  });
  EXPECT_GE(resumed, 1);  // the seed itself
  fs::remove_all(save);
}

}  // namespace
}  // namespace loom
