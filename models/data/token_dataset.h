// TokenDataset: a stream of integer tokens held in host memory, loaded from a plain text file
// (one byte = one token), an llm.c token shard, or generated (models/data/synthetic_task.h).
//
//   LOOM_ASSIGN_OR_RETURN(TokenDataset train, LoadTokenFile("/data/tiny_shakespeare_train.bin"));
//   train.size();          // tokens in the file
//   train.vocab_size();    // 50257 for an llm.c GPT-2 shard, 256 for a text file
//   absl::Span<const int32_t> t = train.tokens();
//   LOOM_LOG(INFO) << train.description();  // "/data/x.bin: llm.c token shard, 305260 tokens, ..."
//
// The whole file is read into memory as int32 (4 bytes per token): the files this runtime trains
// on are small (tiny shakespeare is 0.3 M tokens; one FineWeb shard of 100 M tokens takes 400 MB).
// Batches are cut from a dataset by models/data/batch_sampler.h.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/types/span.h"

namespace loom::models::data {

// llm.c token shards (data/*.bin written by llm.c's dev/data scripts): a header of 256 int32
// little-endian values, header[0] = kLlmcShardMagic, header[1] = kLlmcShardVersion,
// header[2] = the token count N, then N uint16 little-endian tokens and nothing else.
inline constexpr int32_t kLlmcShardMagic = 20240520;
inline constexpr int32_t kLlmcShardVersion = 1;  // uint16 GPT-2 tokens
inline constexpr int kLlmcHeaderInts = 256;
inline constexpr int64_t kLlmcHeaderBytes = kLlmcHeaderInts * 4;
// One token per byte.
inline constexpr int kByteVocabSize = 256;

// An immutable token stream. Copies deep-copy the tokens; move it where a copy is not wanted.
class TokenDataset {
 public:
  // Takes the tokens. `name` identifies the source in error messages (a path, or
  // "synthetic sort task (seed 1)"); `description` is a one-line summary for logs. Every token must
  // lie in [0, vocab_size) and vocab_size >= 1 (LOOM_CHECK: callers validate user data first).
  TokenDataset(std::vector<int32_t> tokens, int vocab_size, std::string name,
               std::string description);

  // Number of tokens.
  int64_t size() const { return static_cast<int64_t>(tokens_.size()); }
  // Every token id is in [0, vocab_size()).
  int vocab_size() const { return vocab_size_; }
  // The tokens, in host memory owned by this dataset (valid while it lives and is not moved from).
  absl::Span<const int32_t> tokens() const { return tokens_; }
  // The file path, or the generator's name; errors about this dataset start with it.
  const std::string& name() const { return name_; }
  // "<name>: <format>, <N> tokens, vocab <V>".
  const std::string& description() const { return description_; }

 private:
  std::vector<int32_t> tokens_;
  int vocab_size_;
  std::string name_;
  std::string description_;
};

// Reads a whole token file. A file whose first 4 bytes are kLlmcShardMagic (little-endian int32)
// is an llm.c shard; vocab_size() is its largest token + 1 (the least vocabulary a model needs
// for it: the format does not name the tokenizer). Any other file is text: each byte is one token
// (0..255), vocab_size() == kByteVocabSize.
// Errors, each naming `path` and what is wrong:
//   NotFound for a missing file; PermissionDenied or another errno-derived code if it cannot be
//   read; InvalidArgument for a directory, an empty file, and for shards with a short header,
//   another version, a token count that is not positive, or data that is shorter (truncated) or
//   longer (extra bytes) than 2 × the header's token count.
absl::StatusOr<TokenDataset> LoadTokenFile(const std::string& path);

// Writes `tokens` as a version-1 llm.c shard (header + uint16 tokens), replacing `path`.
// InvalidArgument if `tokens` is empty, holds more than 2^31 - 1 tokens, or holds a token outside
// [0, 65535] (naming its index); an errno-derived error naming `path` if the write fails.
absl::Status WriteLlmcShard(const std::string& path, absl::Span<const int32_t> tokens);

}  // namespace loom::models::data
