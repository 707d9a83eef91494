#include "models/data/token_dataset.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <bit>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <utility>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "runtime/base/check.h"
#include "runtime/base/status_macros.h"

namespace loom::models::data {
namespace {

// Shards are little-endian on disk; reading them with memcpy relies on a little-endian host.
static_assert(std::endian::native == std::endian::little, "token shards assume little-endian");

absl::Status ErrnoError(int error_number, const std::string& path, absl::string_view what) {
  return absl::Status(absl::ErrnoToStatusCode(error_number),
                      absl::StrCat(path, ": ", what, ": ", std::strerror(error_number)));
}

// Closes a file descriptor on scope exit.
class FdCloser {
 public:
  explicit FdCloser(int fd) : fd_(fd) {}
  ~FdCloser() { ::close(fd_); }
  FdCloser(const FdCloser&) = delete;
  FdCloser& operator=(const FdCloser&) = delete;

 private:
  int fd_;
};

absl::StatusOr<std::vector<uint8_t>> ReadWholeFile(const std::string& path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return ErrnoError(errno, path, "cannot open token file");
  FdCloser closer(fd);
  struct stat st;
  if (::fstat(fd, &st) != 0) return ErrnoError(errno, path, "cannot stat token file");
  if (S_ISDIR(st.st_mode)) {
    return absl::InvalidArgumentError(absl::StrCat(path, ": is a directory, not a token file"));
  }
  std::vector<uint8_t> bytes(static_cast<size_t>(std::max<off_t>(st.st_size, 0)));
  size_t filled = 0;
  while (true) {
    if (filled == bytes.size()) {
      // The file may have grown since fstat (or be a pipe): keep reading until EOF.
      bytes.resize(std::max<size_t>(2 * bytes.size(), 4096));
    }
    const ssize_t n = ::read(fd, bytes.data() + filled, bytes.size() - filled);
    if (n < 0) {
      if (errno == EINTR) continue;
      return ErrnoError(errno, path, "cannot read token file");
    }
    if (n == 0) break;
    filled += static_cast<size_t>(n);
  }
  bytes.resize(filled);
  return bytes;
}

int32_t ReadInt32(const uint8_t* p) {
  int32_t v;
  std::memcpy(&v, p, sizeof(v));
  return v;
}

absl::StatusOr<TokenDataset> DecodeLlmcShard(const std::string& path,
                                             const std::vector<uint8_t>& bytes) {
  const int64_t size = static_cast<int64_t>(bytes.size());
  auto error = [&path](auto&&... parts) {
    return absl::InvalidArgumentError(absl::StrCat(path, ": ", parts..., " (llm.c token shard)"));
  };
  if (size >= 4 && ReadInt32(bytes.data()) != kLlmcShardMagic) {
    return error("header magic ", ReadInt32(bytes.data()), " is not ", kLlmcShardMagic,
                 "; files ending in .bin are read as llm.c token shards, use another extension "
                 "for text");
  }
  if (size < kLlmcHeaderBytes) {
    return error("file is ", size, " bytes, shorter than the ", kLlmcHeaderBytes, "-byte header (",
                 kLlmcHeaderInts, " x int32)");
  }
  const int32_t version = ReadInt32(bytes.data() + 4);
  if (version != kLlmcShardVersion) {
    return error("header version ", version, " is not supported; expected ", kLlmcShardVersion,
                 " (uint16 GPT-2 tokens)");
  }
  const int64_t count = ReadInt32(bytes.data() + 8);
  if (count <= 0) {
    return error("header token count is ", count, "; a shard must hold at least one token");
  }
  const int64_t data_bytes = size - kLlmcHeaderBytes;
  if (data_bytes < 2 * count) {
    return error("truncated: header says ", count, " tokens (", 2 * count,
                 " bytes after the header) but the file has ", data_bytes,
                 " bytes after the header");
  }
  if (data_bytes > 2 * count) {
    return error(data_bytes - 2 * count, " bytes of extra data after the ", count,
                 " tokens the header declares (", size, " bytes, expected ",
                 kLlmcHeaderBytes + 2 * count, ")");
  }
  std::vector<int32_t> tokens(static_cast<size_t>(count));
  int32_t max_token = 0;
  const uint8_t* data = bytes.data() + kLlmcHeaderBytes;
  for (int64_t i = 0; i < count; ++i) {
    uint16_t t;
    std::memcpy(&t, data + 2 * i, sizeof(t));
    tokens[i] = t;
    max_token = std::max<int32_t>(max_token, t);
  }
  // The format does not record the tokenizer: the largest id is what the model must cover (a
  // custom tokenizer's shard trains with its own --vocab_size; GPT-2's reach 50256).
  const int vocab = max_token + 1;
  std::string description =
      absl::StrCat(path, ": llm.c token shard, ", count, " tokens, vocab ", vocab);
  return TokenDataset(std::move(tokens), vocab, path, std::move(description));
}

}  // namespace

TokenDataset::TokenDataset(std::vector<int32_t> tokens, int vocab_size, std::string name,
                           std::string description)
    : tokens_(std::move(tokens)),
      vocab_size_(vocab_size),
      name_(std::move(name)),
      description_(std::move(description)) {
  LOOM_CHECK_GE(vocab_size_, 1) << name_;
  for (size_t i = 0; i < tokens_.size(); ++i) {
    LOOM_CHECK(tokens_[i] >= 0 && tokens_[i] < vocab_size_)
        << name_ << ": token " << tokens_[i] << " at index " << i << " is outside [0, "
        << vocab_size_ << ")";
  }
}

absl::StatusOr<TokenDataset> LoadTokenFile(const std::string& path) {
  LOOM_ASSIGN_OR_RETURN(std::vector<uint8_t> bytes, ReadWholeFile(path));
  if (bytes.empty()) {
    return absl::InvalidArgumentError(absl::StrCat(path, ": token file is empty"));
  }
  const bool has_magic = bytes.size() >= 4 && ReadInt32(bytes.data()) == kLlmcShardMagic;
  if (has_magic || absl::EndsWith(path, ".bin")) return DecodeLlmcShard(path, bytes);
  std::vector<int32_t> tokens(bytes.begin(), bytes.end());
  std::string description = absl::StrCat(path, ": text, ", tokens.size(),
                                         " bytes as byte tokens, vocab ", kByteVocabSize);
  return TokenDataset(std::move(tokens), kByteVocabSize, path, std::move(description));
}

absl::Status WriteLlmcShard(const std::string& path, absl::Span<const int32_t> tokens) {
  auto error = [&path](auto&&... parts) {
    return absl::InvalidArgumentError(
        absl::StrCat(path, ": cannot write llm.c token shard: ", parts...));
  };
  if (tokens.empty()) return error("no tokens");
  if (tokens.size() > static_cast<size_t>(INT32_MAX)) {
    return error(tokens.size(), " tokens exceed the header's int32 count");
  }
  std::vector<uint8_t> bytes(static_cast<size_t>(kLlmcHeaderBytes) + 2 * tokens.size(), 0);
  const int32_t header[3] = {kLlmcShardMagic, kLlmcShardVersion,
                             static_cast<int32_t>(tokens.size())};
  std::memcpy(bytes.data(), header, sizeof(header));
  for (size_t i = 0; i < tokens.size(); ++i) {
    if (tokens[i] < 0 || tokens[i] > UINT16_MAX) {
      return error("token ", tokens[i], " at index ", i, " does not fit in uint16");
    }
    const uint16_t t = static_cast<uint16_t>(tokens[i]);
    std::memcpy(bytes.data() + kLlmcHeaderBytes + 2 * i, &t, sizeof(t));
  }
  std::FILE* f = std::fopen(path.c_str(), "wb");
  if (f == nullptr) return ErrnoError(errno, path, "cannot create llm.c token shard");
  const size_t written = std::fwrite(bytes.data(), 1, bytes.size(), f);
  const int write_errno = errno;
  if (written != bytes.size()) {
    std::fclose(f);
    return ErrnoError(write_errno, path, "cannot write llm.c token shard");
  }
  if (std::fclose(f) != 0) return ErrnoError(errno, path, "cannot write llm.c token shard");
  return absl::OkStatus();
}

}  // namespace loom::models::data
