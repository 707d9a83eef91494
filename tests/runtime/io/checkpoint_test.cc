// Checkpoints: round trip; FindLatestCheckpoint picks the newest committed step and ignores
// temporaries and uncommitted directories; every kind of damage (truncated, flipped byte, damaged
// MANIFEST, missing COMMIT, missing file) is refused with the file and the check named; and a
// save that fails midway leaves the earlier checkpoints loadable.
#include "runtime/io/checkpoint.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include <functional>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "runtime/io/crc32c.h"
#include "runtime/io/file.h"
#include "runtime/io/safetensors.h"

namespace loom::runtime::io {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;

std::string PatternBytes(size_t n, int seed) {
  std::string s(n, '\0');
  for (size_t i = 0; i < n; ++i) s[i] = static_cast<char>((i * 31 + seed * 17) & 0xFF);
  return s;
}

class CheckpointTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string pattern = absl::StrCat(::testing::TempDir(), "loom_checkpoint_test.XXXXXX");
    ASSERT_NE(::mkdtemp(pattern.data()), nullptr);
    root_ = pattern;
    save_dir_ = root_ + "/run";
  }
  void TearDown() override {
    ::chmod(save_dir_.c_str(), 0755);
    EXPECT_TRUE(RemoveAll(root_).ok());
  }

  std::vector<std::string> Entries(const std::string& dir) const {
    absl::StatusOr<std::vector<std::string>> names = ListDirectory(dir);
    EXPECT_TRUE(names.ok()) << names.status();
    return names.ok() ? *names : std::vector<std::string>{};
  }

  // Files of a small checkpoint whose contents depend on `seed`.
  static std::vector<CheckpointFile> Files(int seed) {
    return {{"a.bin", PatternBytes(1000, seed)},
            {"b.json", absl::StrCat(R"({"seed": )", seed, "}")}};
  }

  void ExpectLoads(const std::string& dir, int64_t step, const std::vector<CheckpointFile>& files) {
    absl::StatusOr<LoadedCheckpoint> loaded = LoadCheckpoint(dir);
    ASSERT_TRUE(loaded.ok()) << loaded.status();
    EXPECT_EQ(loaded->step, step);
    EXPECT_EQ(loaded->dir, dir);
    ASSERT_EQ(loaded->files.size(), files.size());
    for (const CheckpointFile& f : files) {
      ASSERT_EQ(loaded->files.count(f.name), 1u) << f.name;
      EXPECT_TRUE(loaded->files.at(f.name) == f.bytes) << f.name;
    }
  }

  std::string root_;
  std::string save_dir_;
};

TEST_F(CheckpointTest, RoundTrip) {
  Allocator allocator;
  Tensor w = Tensor::FromVector<float>({2, 3}, {1, 2, 3, 4, 5, 6}, MemoryTag::kParam, &allocator);
  absl::StatusOr<std::string> model = SerializeSafetensors({{"w", w}}, {{"step", "42"}});
  ASSERT_TRUE(model.ok()) << model.status();
  const std::vector<CheckpointFile> files = {
      {"model.safetensors", *model},
      {"trainer.json", R"({"lr": 0.001})"},
      {"empty.bin", ""},
      {"rng-state_0.bin", std::string("\0\x01\xff\0", 4)},
  };
  ASSERT_TRUE(SaveCheckpoint(save_dir_, 42, files).ok());

  const std::string dir = save_dir_ + "/step-00000042";
  EXPECT_EQ(CheckpointDir(save_dir_, 42), dir);
  EXPECT_THAT(Entries(save_dir_), ElementsAre("step-00000042"));  // no temporaries left
  EXPECT_THAT(Entries(dir), ElementsAre("COMMIT", "MANIFEST", "empty.bin", "model.safetensors",
                                        "rng-state_0.bin", "trainer.json"));

  // MANIFEST records each file's size and CRC-32C; COMMIT records MANIFEST's CRC-32C.
  const std::string manifest = *ReadFile(dir + "/MANIFEST");
  for (const CheckpointFile& f : files) {
    EXPECT_THAT(manifest, HasSubstr(absl::StrCat("\"crc32c\": ", Crc32c(f.bytes))));
    EXPECT_THAT(manifest, HasSubstr(absl::StrCat("\"size\": ", f.bytes.size())));
  }
  EXPECT_THAT(*ReadFile(dir + "/COMMIT"),
              HasSubstr(absl::StrCat("\"manifest_crc32c\":", Crc32c(manifest))));

  absl::StatusOr<std::string> latest = FindLatestCheckpoint(save_dir_);
  ASSERT_TRUE(latest.ok()) << latest.status();
  EXPECT_EQ(*latest, dir);
  ExpectLoads(dir, 42, files);

  absl::StatusOr<LoadedCheckpoint> loaded = LoadCheckpoint(dir);
  ASSERT_TRUE(loaded.ok());
  absl::StatusOr<SafetensorsFile> params =
      ParseSafetensors(loaded->files.at("model.safetensors"), dir, MemoryTag::kParam, &allocator);
  ASSERT_TRUE(params.ok()) << params.status();
  EXPECT_EQ(params->Find("w")->ToF32Vector(), (std::vector<float>{1, 2, 3, 4, 5, 6}));
  EXPECT_EQ(params->metadata.at("step"), "42");
}

TEST_F(CheckpointTest, FindLatestPicksNewestCommittedStep) {
  for (int step : {1, 3, 2}) ASSERT_TRUE(SaveCheckpoint(save_dir_, step, Files(step)).ok());
  // A newer step whose save died before COMMIT ...
  ASSERT_TRUE(SaveCheckpoint(save_dir_, 5, Files(5)).ok());
  ASSERT_EQ(::unlink((save_dir_ + "/step-00000005/COMMIT").c_str()), 0);
  // ... a temporary directory, even one that looks complete ...
  ASSERT_TRUE(SaveCheckpoint(save_dir_, 9, Files(9)).ok());
  ASSERT_EQ(
      ::rename((save_dir_ + "/step-00000009").c_str(), (save_dir_ + "/.tmp-step-00000009").c_str()),
      0);
  // ... and names that are not checkpoints.
  ASSERT_TRUE(MakeDirectories(save_dir_ + "/step-abc").ok());
  ASSERT_TRUE(MakeDirectories(save_dir_ + "/step-").ok());
  ASSERT_TRUE(WriteFileAtomic(save_dir_ + "/step-00000007", "a file, not a directory").ok());

  absl::StatusOr<std::string> latest = FindLatestCheckpoint(save_dir_);
  ASSERT_TRUE(latest.ok()) << latest.status();
  EXPECT_EQ(*latest, save_dir_ + "/step-00000003");
  ExpectLoads(*latest, 3, Files(3));

  absl::StatusOr<LoadedCheckpoint> uncommitted = LoadCheckpoint(save_dir_ + "/step-00000005");
  EXPECT_EQ(uncommitted.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(uncommitted.status().message(), HasSubstr("missing commit marker"));
}

TEST_F(CheckpointTest, FindLatestComparesStepsNumerically) {
  // "step-123456789" sorts before "step-99999999" as a string.
  ASSERT_TRUE(SaveCheckpoint(save_dir_, 99999999, Files(1)).ok());
  ASSERT_TRUE(SaveCheckpoint(save_dir_, 123456789, Files(2)).ok());
  absl::StatusOr<std::string> latest = FindLatestCheckpoint(save_dir_);
  ASSERT_TRUE(latest.ok()) << latest.status();
  EXPECT_EQ(*latest, save_dir_ + "/step-123456789");
  ExpectLoads(*latest, 123456789, Files(2));
}

TEST_F(CheckpointTest, FindLatestWithoutCheckpointIsNotFound) {
  absl::StatusOr<std::string> missing = FindLatestCheckpoint(save_dir_);
  EXPECT_EQ(missing.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(missing.status().message(), HasSubstr(save_dir_));
  EXPECT_THAT(missing.status().message(), HasSubstr("does not exist"));

  ASSERT_TRUE(MakeDirectories(save_dir_ + "/.tmp-step-00000001").ok());
  ASSERT_TRUE(MakeDirectories(save_dir_ + "/step-00000002").ok());
  absl::StatusOr<std::string> none = FindLatestCheckpoint(save_dir_);
  EXPECT_EQ(none.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(none.status().message(), HasSubstr("no committed checkpoint"));
  EXPECT_THAT(none.status().message(), HasSubstr("1 without it"));

  EXPECT_EQ(LoadCheckpoint(save_dir_ + "/step-00000077").status().code(),
            absl::StatusCode::kNotFound);
}

struct Damage {
  const char* what;
  std::function<void(const std::string& dir)> apply;
  absl::StatusCode code;
  std::vector<std::string> message_parts;  // each must appear in the message
};

void FlipByte(const std::string& path, size_t offset) {
  std::string bytes = *ReadFile(path);
  ASSERT_LT(offset, bytes.size());
  bytes[offset] = static_cast<char>(bytes[offset] ^ 0x01);
  ASSERT_TRUE(WriteFileAtomic(path, bytes).ok());
}

TEST_F(CheckpointTest, DamagedCheckpointsAreRefusedNamingFileAndCheck) {
  using C = absl::StatusCode;
  const std::vector<Damage> damages = {
      {"truncated file",
       [](const std::string& dir) { ASSERT_EQ(::truncate((dir + "/a.bin").c_str(), 999), 0); },
       C::kDataLoss,
       {"/a.bin: size 999 bytes does not match MANIFEST (1000 bytes)", "truncated"}},
      {"file grew",
       [](const std::string& dir) {
         ASSERT_TRUE(WriteFileAtomic(dir + "/b.json", *ReadFile(dir + "/b.json") + " ").ok());
       },
       C::kDataLoss,
       {"/b.json: size", "does not match MANIFEST"}},
      {"one flipped byte in a file",
       [](const std::string& dir) { FlipByte(dir + "/a.bin", 500); },
       C::kDataLoss,
       {"/a.bin: crc32c 0x", "does not match MANIFEST (0x", "corrupt"}},
      {"one flipped byte in MANIFEST",
       [](const std::string& dir) { FlipByte(dir + "/MANIFEST", 40); },
       C::kDataLoss,
       {"/MANIFEST: crc32c 0x", "recorded in COMMIT", "manifest is corrupt"}},
      {"missing COMMIT",
       [](const std::string& dir) { ASSERT_EQ(::unlink((dir + "/COMMIT").c_str()), 0); },
       C::kFailedPrecondition,
       {"missing commit marker COMMIT"}},
      {"damaged COMMIT",
       [](const std::string& dir) { ASSERT_TRUE(WriteFileAtomic(dir + "/COMMIT", "{}").ok()); },
       C::kDataLoss,
       {"/COMMIT: malformed commit marker"}},
      {"missing file",
       [](const std::string& dir) { ASSERT_EQ(::unlink((dir + "/b.json").c_str()), 0); },
       C::kDataLoss,
       {"/b.json: missing; MANIFEST lists it"}},
      {"missing MANIFEST",
       [](const std::string& dir) { ASSERT_EQ(::unlink((dir + "/MANIFEST").c_str()), 0); },
       C::kDataLoss,
       {"/MANIFEST: missing"}},
      {"a MANIFEST naming a file outside its directory (with a COMMIT that matches it)",
       [](const std::string& dir) {
         const std::string manifest =
             R"({"format": "loom-checkpoint", "version": 1, "step": 7, "files": [)"
             R"({"name": "../../secret", "size": 1, "crc32c": 0}]})";
         ASSERT_TRUE(WriteFileAtomic(dir + "/MANIFEST", manifest).ok());
         ASSERT_TRUE(WriteFileAtomic(dir + "/COMMIT",
                                     absl::StrCat(R"({"format": "loom-checkpoint-commit", )",
                                                  R"("manifest_crc32c": )", Crc32c(manifest), "}"))
                         .ok());
       },
       C::kInvalidArgument,
       {"/MANIFEST: checkpoint file name '../../secret' starts with '.'"}},
  };
  for (const Damage& damage : damages) {
    SCOPED_TRACE(damage.what);
    ASSERT_TRUE(RemoveAll(save_dir_).ok());
    ASSERT_TRUE(SaveCheckpoint(save_dir_, 7, Files(7)).ok());
    const std::string dir = save_dir_ + "/step-00000007";
    ExpectLoads(dir, 7, Files(7));  // intact before the damage
    damage.apply(dir);
    absl::StatusOr<LoadedCheckpoint> loaded = LoadCheckpoint(dir);
    ASSERT_FALSE(loaded.ok());
    EXPECT_EQ(loaded.status().code(), damage.code) << loaded.status();
    EXPECT_THAT(loaded.status().message(), HasSubstr(dir));
    for (const std::string& part : damage.message_parts) {
      EXPECT_THAT(loaded.status().message(), HasSubstr(part));
    }
  }
}

TEST_F(CheckpointTest, OnlyTheOwnerCanReadACheckpoint) {
  ASSERT_TRUE(SaveCheckpoint(save_dir_, 3, Files(3)).ok());
  const std::string dir = save_dir_ + "/step-00000003";
  for (const std::string& path : {save_dir_, dir}) {
    struct stat st;
    ASSERT_EQ(::stat(path.c_str(), &st), 0);
    EXPECT_EQ(st.st_mode & 0777, 0700u) << path;
  }
  for (const char* name : {"a.bin", "b.json", "MANIFEST", "COMMIT"}) {
    struct stat st;
    ASSERT_EQ(::stat((dir + "/" + std::string(name)).c_str(), &st), 0);
    EXPECT_EQ(st.st_mode & 0777, 0600u) << name;
  }
}

TEST_F(CheckpointTest, PruneKeepsTheNewestCommittedAndRemovesLeftovers) {
  for (int step : {1, 2, 10, 11}) ASSERT_TRUE(SaveCheckpoint(save_dir_, step, Files(step)).ok());
  ASSERT_TRUE(MakeDirectories(save_dir_ + "/step-00000012").ok());  // uncommitted: untouched
  ASSERT_TRUE(MakeDirectories(save_dir_ + "/.tmp-step-00000013").ok());
  absl::StatusOr<std::vector<std::string>> removed = PruneCheckpoints(save_dir_, 2);
  ASSERT_TRUE(removed.ok()) << removed.status();
  EXPECT_THAT(*removed,
              ::testing::ElementsAre(save_dir_ + "/step-00000001", save_dir_ + "/step-00000002"));
  EXPECT_THAT(Entries(save_dir_), ::testing::ElementsAre(".tmp-step-00000013", "step-00000010",
                                                         "step-00000011", "step-00000012"));
  ExpectLoads(save_dir_ + "/step-00000010", 10, Files(10));
  EXPECT_EQ(PruneCheckpoints(save_dir_, 0).status().code(), absl::StatusCode::kInvalidArgument);
  absl::StatusOr<std::vector<std::string>> leftovers = RemoveInterruptedSaves(save_dir_);
  ASSERT_TRUE(leftovers.ok());
  EXPECT_THAT(*leftovers, ::testing::ElementsAre(save_dir_ + "/.tmp-step-00000013"));
  EXPECT_THAT(Entries(save_dir_),
              ::testing::ElementsAre("step-00000010", "step-00000011", "step-00000012"));
  EXPECT_TRUE(RemoveInterruptedSaves(root_ + "/absent")->empty());
}

TEST_F(CheckpointTest, SaveReplacesSameStepAndClearsLeftovers) {
  ASSERT_TRUE(SaveCheckpoint(save_dir_, 5, {{"a", "old"}, {"stale", "only in the old one"}}).ok());
  // A save of step 5 that crashed earlier left its temporary directory behind.
  ASSERT_TRUE(MakeDirectories(save_dir_ + "/.tmp-step-00000005").ok());
  ASSERT_TRUE(WriteFileAtomic(save_dir_ + "/.tmp-step-00000005/junk", "x").ok());

  const std::vector<CheckpointFile> replacement = {{"a", "new"}, {"b", "added"}};
  ASSERT_TRUE(SaveCheckpoint(save_dir_, 5, replacement).ok());
  ExpectLoads(save_dir_ + "/step-00000005", 5, replacement);
  EXPECT_THAT(Entries(save_dir_), ElementsAre("step-00000005"));
  EXPECT_THAT(Entries(save_dir_ + "/step-00000005"), ElementsAre("COMMIT", "MANIFEST", "a", "b"));
}

TEST_F(CheckpointTest, FailedSaveLeavesEarlierCheckpointsLoadable) {
  ASSERT_TRUE(SaveCheckpoint(save_dir_, 1, Files(1)).ok());
  // The second file's name is longer than any filesystem allows, so the save fails after the
  // first file of the new checkpoint has been written.
  const std::vector<CheckpointFile> doomed = {{"a.bin", "new data"},
                                              {std::string(300, 'n'), "never written"}};
  absl::Status failed = SaveCheckpoint(save_dir_, 2, doomed);
  ASSERT_FALSE(failed.ok());
  EXPECT_THAT(failed.message(), HasSubstr("saving checkpoint step 2"));
  EXPECT_THAT(failed.message(), HasSubstr(".tmp-step-00000002/nnnn"));

  // Overwriting the same step fails the same way and keeps the old contents.
  absl::Status failed_same_step = SaveCheckpoint(save_dir_, 1, doomed);
  ASSERT_FALSE(failed_same_step.ok());

  EXPECT_THAT(Entries(save_dir_), ElementsAre("step-00000001"));  // temporaries removed
  absl::StatusOr<std::string> latest = FindLatestCheckpoint(save_dir_);
  ASSERT_TRUE(latest.ok()) << latest.status();
  EXPECT_EQ(*latest, save_dir_ + "/step-00000001");
  ExpectLoads(*latest, 1, Files(1));
}

TEST_F(CheckpointTest, UnwritableSaveDirLeavesEarlierCheckpointsLoadable) {
  if (::geteuid() == 0) GTEST_SKIP() << "root ignores directory permissions";
  ASSERT_TRUE(SaveCheckpoint(save_dir_, 1, Files(1)).ok());
  ASSERT_EQ(::chmod(save_dir_.c_str(), 0555), 0);
  absl::Status failed = SaveCheckpoint(save_dir_, 2, Files(2));
  EXPECT_EQ(failed.code(), absl::StatusCode::kPermissionDenied);
  EXPECT_THAT(failed.message(), HasSubstr(save_dir_));
  ASSERT_EQ(::chmod(save_dir_.c_str(), 0755), 0);
  EXPECT_EQ(*FindLatestCheckpoint(save_dir_), save_dir_ + "/step-00000001");
  ExpectLoads(save_dir_ + "/step-00000001", 1, Files(1));
}

TEST_F(CheckpointTest, RejectsBadArgumentsBeforeTouchingTheDisk) {
  const std::vector<std::vector<CheckpointFile>> bad_lists = {
      {{"", "x"}},         {{".hidden", "x"}}, {{"a/b", "x"}},    {{"../escape", "x"}},
      {{"MANIFEST", "x"}}, {{"COMMIT", "x"}},  {{"sp ace", "x"}}, {{"a", "1"}, {"a", "2"}},
  };
  for (const std::vector<CheckpointFile>& files : bad_lists) {
    absl::Status s = SaveCheckpoint(save_dir_, 1, files);
    EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << files.back().name;
    EXPECT_THAT(s.message(), HasSubstr(absl::StrCat("'", files.back().name, "'")));
  }
  absl::Status negative = SaveCheckpoint(save_dir_, -1, Files(1));
  EXPECT_EQ(negative.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(negative.message(), HasSubstr("step must be >= 0"));
  struct stat st;
  EXPECT_NE(::stat(save_dir_.c_str(), &st), 0);  // nothing was created
}

}  // namespace
}  // namespace loom::runtime::io
