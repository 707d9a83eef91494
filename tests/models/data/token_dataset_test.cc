// Token files: llm.c shards round-trip bit-exactly, text files load byte by byte, and every
// malformed file gives an error that names the file and what is wrong.
#include "models/data/token_dataset.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <sys/stat.h>

#include <cstdint>
#include <cstdio>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

namespace loom::models::data {
namespace {

using ::testing::HasSubstr;

std::string TempPath(const std::string& name) {
  return ::testing::TempDir() + "/loom_token_dataset_test_" + name;
}

void WriteBytes(const std::string& path, const std::vector<uint8_t>& bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(reinterpret_cast<const char*>(bytes.data()),
            static_cast<std::streamsize>(bytes.size()));
  ASSERT_TRUE(out.good()) << path;
}

std::vector<uint8_t> ReadBytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::vector<uint8_t>(std::istreambuf_iterator<char>(in), {});
}

// Little-endian encodings written out byte by byte, independent of the loader's memcpy.
void PutInt32(std::vector<uint8_t>& bytes, size_t at, int64_t value) {
  const uint32_t v = static_cast<uint32_t>(value);
  for (int i = 0; i < 4; ++i) bytes[at + i] = static_cast<uint8_t>(v >> (8 * i));
}

// An llm.c shard built by hand: 256-int header (magic, version, count) then uint16 tokens.
std::vector<uint8_t> ShardBytes(int64_t magic, int64_t version, int64_t header_count,
                                const std::vector<int>& tokens) {
  std::vector<uint8_t> bytes(1024 + 2 * tokens.size(), 0);
  PutInt32(bytes, 0, magic);
  PutInt32(bytes, 4, version);
  PutInt32(bytes, 8, header_count);
  for (size_t i = 0; i < tokens.size(); ++i) {
    bytes[1024 + 2 * i] = static_cast<uint8_t>(tokens[i] & 0xFF);
    bytes[1024 + 2 * i + 1] = static_cast<uint8_t>(tokens[i] >> 8);
  }
  return bytes;
}

TEST(TokenDatasetTest, LlmcShardRoundTripIsBitExact) {
  const std::vector<int32_t> tokens = {0, 1, 255, 256, 50256, 12345, 7, 65535};
  const std::string path = TempPath("roundtrip.bin");
  ASSERT_TRUE(WriteLlmcShard(path, tokens).ok());

  // The bytes on disk are exactly what llm.c writes: header then uint16 little-endian tokens.
  std::vector<int> as_int(tokens.begin(), tokens.end());
  EXPECT_EQ(ReadBytes(path), ShardBytes(20240520, 1, 8, as_int));

  absl::StatusOr<TokenDataset> loaded = LoadTokenFile(path);
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  EXPECT_EQ(std::vector<int32_t>(loaded->tokens().begin(), loaded->tokens().end()), tokens);
  EXPECT_EQ(loaded->size(), 8);
  EXPECT_EQ(loaded->vocab_size(), 65536);  // 65535 is above GPT-2's vocabulary
  EXPECT_EQ(loaded->name(), path);
  EXPECT_THAT(loaded->description(), HasSubstr("llm.c token shard, 8 tokens, vocab 65536"));
}

// A shard's vocabulary is its largest token + 1: GPT-2's shards reach 50256, and a custom
// tokenizer's shard with a small vocabulary trains a model of that vocabulary.
TEST(TokenDatasetTest, ShardVocabularyIsItsLargestTokenPlusOne) {
  const std::string path = TempPath("gpt2.bin");
  ASSERT_TRUE(WriteLlmcShard(path, {50256, 3, 50256}).ok());
  absl::StatusOr<TokenDataset> loaded = LoadTokenFile(path);
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  EXPECT_EQ(loaded->vocab_size(), 50257);
  ASSERT_TRUE(WriteLlmcShard(path, {7, 63, 0, 12}).ok());
  loaded = LoadTokenFile(path);
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  EXPECT_EQ(loaded->vocab_size(), 64);
  EXPECT_THAT(loaded->description(), HasSubstr("llm.c token shard, 4 tokens, vocab 64"));
}

TEST(TokenDatasetTest, ShardIsDetectedByMagicWhateverTheExtension) {
  const std::string path = TempPath("shard.tokens");
  WriteBytes(path, ShardBytes(20240520, 1, 3, {9, 8, 7}));
  absl::StatusOr<TokenDataset> loaded = LoadTokenFile(path);
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  EXPECT_EQ(std::vector<int32_t>(loaded->tokens().begin(), loaded->tokens().end()),
            (std::vector<int32_t>{9, 8, 7}));
}

TEST(TokenDatasetTest, TextFileIsOneTokenPerByte) {
  const std::vector<uint8_t> bytes = {'H', 'i', '\n', 0x00, 0xFF, 0x80, ' '};
  const std::string path = TempPath("text.txt");
  WriteBytes(path, bytes);
  absl::StatusOr<TokenDataset> loaded = LoadTokenFile(path);
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  EXPECT_EQ(std::vector<int32_t>(loaded->tokens().begin(), loaded->tokens().end()),
            (std::vector<int32_t>{72, 105, 10, 0, 255, 128, 32}));
  EXPECT_EQ(loaded->vocab_size(), 256);
  EXPECT_THAT(loaded->description(), HasSubstr("text, 7 bytes"));
}

TEST(TokenDatasetTest, ShortTextFileIsText) {
  const std::string path = TempPath("short.txt");
  WriteBytes(path, {'a', 'b'});  // shorter than a magic number
  absl::StatusOr<TokenDataset> loaded = LoadTokenFile(path);
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  EXPECT_EQ(loaded->size(), 2);
}

struct MalformedCase {
  const char* name;
  std::vector<uint8_t> bytes;
  std::vector<const char*> message_parts;
};

TEST(TokenDatasetTest, MalformedShardsNameTheFileAndTheProblem) {
  std::vector<uint8_t> short_header = ShardBytes(20240520, 1, 10, {});
  short_header.resize(100);
  std::vector<uint8_t> odd = ShardBytes(20240520, 1, 3, {1, 2, 3});
  odd.pop_back();
  const std::vector<MalformedCase> cases = {
      {"wrong_magic.bin",
       ShardBytes(12345, 1, 3, {1, 2, 3}),
       {"header magic 12345 is not 20240520", "(llm.c token shard)"}},
      {"wrong_version.bin",
       ShardBytes(20240520, 2, 3, {1, 2, 3}),
       {"header version 2 is not supported; expected 1"}},
      {"truncated.bin",
       ShardBytes(20240520, 1, 10, {1, 2, 3}),
       {"truncated: header says 10 tokens (20 bytes after the header)",
        "the file has 6 bytes after the header"}},
      {"odd_bytes.bin", odd, {"truncated: header says 3 tokens", "the file has 5 bytes"}},
      {"extra.bin",
       ShardBytes(20240520, 1, 2, {1, 2, 3}),
       {"2 bytes of extra data after the 2 tokens the header declares"}},
      {"short_header.bin",
       short_header,
       {"file is 100 bytes, shorter than the 1024-byte header (256 x int32)"}},
      {"short_header_any_extension.dat", short_header, {"shorter than the 1024-byte header"}},
      {"zero_count.bin", ShardBytes(20240520, 1, 0, {}), {"header token count is 0"}},
      {"negative_count.bin", ShardBytes(20240520, 1, -5, {}), {"header token count is -5"}},
      {"tiny.bin", {1, 2}, {"file is 2 bytes, shorter than the 1024-byte header"}},
  };
  for (const MalformedCase& c : cases) {
    const std::string path = TempPath(c.name);
    WriteBytes(path, c.bytes);
    absl::StatusOr<TokenDataset> loaded = LoadTokenFile(path);
    ASSERT_FALSE(loaded.ok()) << c.name;
    EXPECT_EQ(loaded.status().code(), absl::StatusCode::kInvalidArgument) << c.name;
    const std::string message(loaded.status().message());
    EXPECT_THAT(message, HasSubstr(path + ": ")) << c.name;
    for (const char* part : c.message_parts) EXPECT_THAT(message, HasSubstr(part)) << c.name;
  }
}

TEST(TokenDatasetTest, MissingFileIsNotFound) {
  const std::string path = TempPath("does_not_exist.bin");
  std::remove(path.c_str());
  absl::StatusOr<TokenDataset> loaded = LoadTokenFile(path);
  ASSERT_FALSE(loaded.ok());
  EXPECT_EQ(loaded.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(std::string(loaded.status().message()), HasSubstr(path + ": cannot open"));
}

TEST(TokenDatasetTest, EmptyFileAndDirectoryAreErrors) {
  const std::string path = TempPath("empty.txt");
  WriteBytes(path, {});
  absl::StatusOr<TokenDataset> empty = LoadTokenFile(path);
  ASSERT_FALSE(empty.ok());
  EXPECT_EQ(empty.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(empty.status().message()), HasSubstr(path + ": token file is empty"));

  const std::string dir = TempPath("a_directory");
  ::mkdir(dir.c_str(), 0755);
  absl::StatusOr<TokenDataset> directory = LoadTokenFile(dir);
  ASSERT_FALSE(directory.ok());
  EXPECT_EQ(directory.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(directory.status().message()), HasSubstr(dir + ": is a directory"));
}

TEST(TokenDatasetTest, WriterRejectsWhatAShardCannotHold) {
  const std::string path = TempPath("bad_write.bin");
  absl::Status too_big = WriteLlmcShard(path, {1, 65536});
  EXPECT_EQ(too_big.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(too_big.message()),
              HasSubstr(path + ": cannot write llm.c token shard: token 65536 at index 1"));
  EXPECT_EQ(WriteLlmcShard(path, {-1}).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(WriteLlmcShard(path, {}).code(), absl::StatusCode::kInvalidArgument);

  const std::string no_dir = TempPath("no_such_dir/x.bin");
  absl::Status unwritable = WriteLlmcShard(no_dir, {1});
  EXPECT_EQ(unwritable.code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(std::string(unwritable.message()), HasSubstr(no_dir));
}

TEST(TokenDatasetDeathTest, ConstructorChecksTokenRange) {
  EXPECT_DEATH(TokenDataset({0, 5}, 5, "mine", "mine"), "token 5 at index 1 is outside");
}

}  // namespace
}  // namespace loom::models::data
