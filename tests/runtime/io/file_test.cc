// file.h: atomic writes replace files whole and leave no temporaries behind on success or failure,
// reads return exact bytes, and every failure is a Status naming the path.
#include "runtime/io/file.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include <string>
#include <vector>

#include "absl/strings/str_cat.h"

namespace loom::runtime::io {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;

// A fresh directory under the test temp dir, removed when the test ends.
class FileTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string pattern = absl::StrCat(::testing::TempDir(), "loom_file_test.XXXXXX");
    ASSERT_NE(::mkdtemp(pattern.data()), nullptr);
    dir_ = pattern;
  }
  void TearDown() override { EXPECT_TRUE(RemoveAll(dir_).ok()); }

  std::string Path(absl::string_view name) const { return absl::StrCat(dir_, "/", name); }
  std::vector<std::string> Entries() const {
    absl::StatusOr<std::vector<std::string>> names = ListDirectory(dir_);
    EXPECT_TRUE(names.ok()) << names.status();
    return names.ok() ? *names : std::vector<std::string>{};
  }

  std::string dir_;
};

std::string PatternBytes(size_t n) {
  std::string s(n, '\0');
  for (size_t i = 0; i < n; ++i) s[i] = static_cast<char>((i * 131 + i / 251) & 0xFF);
  return s;
}

TEST_F(FileTest, WriteThenReadRoundTripsExactBytes) {
  for (size_t n : {size_t{0}, size_t{1}, size_t{4095}, size_t{4096}, size_t{3} << 20}) {
    const std::string bytes = PatternBytes(n);
    ASSERT_TRUE(WriteFileAtomic(Path("f.bin"), bytes).ok());
    absl::StatusOr<std::string> back = ReadFile(Path("f.bin"));
    ASSERT_TRUE(back.ok()) << back.status();
    EXPECT_EQ(back->size(), n);
    EXPECT_TRUE(*back == bytes) << "size " << n;
  }
  std::string with_nul("a\0b\xff", 4);
  ASSERT_TRUE(WriteFileAtomic(Path("nul.bin"), with_nul).ok());
  EXPECT_EQ(*ReadFile(Path("nul.bin")), with_nul);
  EXPECT_THAT(Entries(), ElementsAre("f.bin", "nul.bin"));  // no temporaries left
}

TEST_F(FileTest, AtomicWriteReplacesExistingFile) {
  ASSERT_TRUE(WriteFileAtomic(Path("f"), "old contents, longer than the new").ok());
  ASSERT_TRUE(WriteFileAtomic(Path("f"), "new").ok());
  EXPECT_EQ(*ReadFile(Path("f")), "new");
  EXPECT_THAT(Entries(), ElementsAre("f"));
}

TEST_F(FileTest, ReadMissingFileIsNotFoundNamingThePath) {
  absl::StatusOr<std::string> r = ReadFile(Path("missing.bin"));
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(r.status().message(), HasSubstr(Path("missing.bin")));
  EXPECT_THAT(r.status().message(), HasSubstr("No such file"));

  absl::StatusOr<std::string> d = ReadFile(dir_);
  ASSERT_FALSE(d.ok());
  EXPECT_EQ(d.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(d.status().message(), HasSubstr("is a directory"));
}

TEST_F(FileTest, WriteIntoMissingDirectoryFailsNamingThePath) {
  const std::string path = Path("no/such/dir/f.bin");
  absl::Status s = WriteFileAtomic(path, "x");
  EXPECT_EQ(s.code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(s.message(), HasSubstr(path));
  EXPECT_TRUE(Entries().empty());
}

TEST_F(FileTest, FailedRenameRemovesTemporaryAndKeepsTarget) {
  // A non-empty directory at the target path makes the final rename fail after the data was
  // written: the temporary must go and the directory must survive.
  ASSERT_TRUE(MakeDirectories(Path("target/inner")).ok());
  absl::Status s = WriteFileAtomic(Path("target"), "payload");
  EXPECT_FALSE(s.ok());
  EXPECT_THAT(s.message(), HasSubstr(Path("target")));
  EXPECT_THAT(s.message(), HasSubstr("rename"));
  EXPECT_THAT(Entries(), ElementsAre("target"));
  EXPECT_THAT(*ListDirectory(Path("target")), ElementsAre("inner"));
}

TEST_F(FileTest, StreamingWriterIsInvisibleUntilCommit) {
  ASSERT_TRUE(WriteFileAtomic(Path("f"), "previous").ok());
  absl::StatusOr<AtomicFileWriter> w = AtomicFileWriter::Open(Path("f"));
  ASSERT_TRUE(w.ok()) << w.status();
  ASSERT_TRUE(w->Append("hello, ").ok());
  const std::string big = PatternBytes(100000);
  ASSERT_TRUE(w->Append(big.data(), big.size()).ok());
  EXPECT_EQ(w->bytes_written(), 7u + big.size());
  EXPECT_EQ(*ReadFile(Path("f")), "previous");  // not yet committed
  EXPECT_EQ(Entries().size(), 2u);              // f and the temporary
  ASSERT_TRUE(w->Commit().ok());
  EXPECT_EQ(*ReadFile(Path("f")), "hello, " + big);
  EXPECT_THAT(Entries(), ElementsAre("f"));

  absl::Status again = w->Commit();
  EXPECT_EQ(again.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(again.message(), HasSubstr("twice"));
  EXPECT_EQ(w->Append("more").code(), absl::StatusCode::kFailedPrecondition);
}

TEST_F(FileTest, AbandonedWriterRemovesItsTemporary) {
  ASSERT_TRUE(WriteFileAtomic(Path("f"), "keep me").ok());
  {
    absl::StatusOr<AtomicFileWriter> w = AtomicFileWriter::Open(Path("f"));
    ASSERT_TRUE(w.ok());
    ASSERT_TRUE(w->Append("half-written").ok());
    AtomicFileWriter moved = *std::move(w);  // ownership of the temporary moves with it
    EXPECT_EQ(Entries().size(), 2u);
  }
  EXPECT_EQ(*ReadFile(Path("f")), "keep me");
  EXPECT_THAT(Entries(), ElementsAre("f"));
}

TEST_F(FileTest, RandomAccessReadsRangesAndReportsEndOfFile) {
  const std::string bytes = PatternBytes(1000);
  ASSERT_TRUE(WriteFileAtomic(Path("r"), bytes).ok());
  absl::StatusOr<RandomAccessFile> f = RandomAccessFile::Open(Path("r"));
  ASSERT_TRUE(f.ok()) << f.status();
  EXPECT_EQ(f->size(), 1000u);
  std::string buf(100, '\0');
  ASSERT_TRUE(f->ReadAt(900, buf.data(), 100).ok());
  EXPECT_EQ(buf, bytes.substr(900, 100));
  ASSERT_TRUE(f->ReadAt(17, buf.data(), 0).ok());

  absl::Status past = f->ReadAt(950, buf.data(), 100);
  EXPECT_EQ(past.code(), absl::StatusCode::kDataLoss);
  EXPECT_THAT(past.message(), HasSubstr(Path("r")));
  EXPECT_THAT(past.message(), HasSubstr("unexpected end of file"));

  EXPECT_EQ(RandomAccessFile::Open(Path("nope")).status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(RandomAccessFile::Open(dir_).status().code(), absl::StatusCode::kFailedPrecondition);
}

TEST_F(FileTest, MakeDirectoriesCreatesParentsAndIsIdempotent) {
  const std::string deep = Path("a/b//c/d/");
  ASSERT_TRUE(MakeDirectories(deep).ok());
  struct stat st;
  ASSERT_EQ(::stat(Path("a/b/c/d").c_str(), &st), 0);
  EXPECT_TRUE(S_ISDIR(st.st_mode));
  EXPECT_TRUE(MakeDirectories(deep).ok());
  EXPECT_TRUE(FsyncDirectory(Path("a/b/c")).ok());

  ASSERT_TRUE(WriteFileAtomic(Path("a/file"), "x").ok());
  absl::Status blocked = MakeDirectories(Path("a/file/sub"));
  EXPECT_EQ(blocked.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(blocked.message(), HasSubstr(Path("a/file")));
  EXPECT_THAT(blocked.message(), HasSubstr("not a directory"));
  EXPECT_EQ(MakeDirectories("").code(), absl::StatusCode::kInvalidArgument);
}

TEST_F(FileTest, FsyncDirectoryAndListDirectoryReportMissingPaths) {
  absl::Status s = FsyncDirectory(Path("missing"));
  EXPECT_EQ(s.code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(s.message(), HasSubstr(Path("missing")));
  EXPECT_EQ(ListDirectory(Path("missing")).status().code(), absl::StatusCode::kNotFound);
}

TEST_F(FileTest, ListAndRemoveAll) {
  ASSERT_TRUE(MakeDirectories(Path("tree/x/y")).ok());
  ASSERT_TRUE(WriteFileAtomic(Path("tree/b"), "1").ok());
  ASSERT_TRUE(WriteFileAtomic(Path("tree/a"), "2").ok());
  ASSERT_TRUE(WriteFileAtomic(Path("tree/x/y/z"), "3").ok());
  EXPECT_THAT(*ListDirectory(Path("tree")), ElementsAre("a", "b", "x"));
  ASSERT_TRUE(RemoveAll(Path("tree")).ok());
  EXPECT_TRUE(Entries().empty());
  EXPECT_TRUE(RemoveAll(Path("tree")).ok());  // already gone is fine
}

}  // namespace
}  // namespace loom::runtime::io
