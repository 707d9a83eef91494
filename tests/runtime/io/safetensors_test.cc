// safetensors: round trips of every dtype (empty and scalar tensors included), a file laid out by
// hand exactly as Python's safetensors library writes it, and one malformed file per check, each
// rejected with a message naming the file, the tensor and the check. Expected bytes are spelled
// out in the tests (IEEE bit patterns, header JSON strings), never produced by the code under test.
#include "runtime/io/safetensors.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <stdlib.h>

#include <cstring>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "runtime/io/file.h"

namespace loom::runtime::io {
namespace {

using ::testing::HasSubstr;

// Little-endian bytes of the low `n` bytes of `v`.
std::string Le(uint64_t v, int n) {
  std::string s;
  for (int i = 0; i < n; ++i) s.push_back(static_cast<char>((v >> (8 * i)) & 0xFF));
  return s;
}

// A safetensors image: 8-byte little-endian header length, the header text as given (no padding
// added), then the data buffer.
std::string Image(absl::string_view header, absl::string_view data) {
  return absl::StrCat(Le(header.size(), 8), header, data);
}

std::string PadTo8(std::string header) {
  while (header.size() % 8 != 0) header.push_back(' ');
  return header;
}

std::string RawBytes(const Tensor& t) {
  return t.nbytes() == 0 ? std::string()
                         : std::string(static_cast<const char*>(t.raw_data()), t.nbytes());
}

class SafetensorsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string pattern = absl::StrCat(::testing::TempDir(), "loom_safetensors_test.XXXXXX");
    ASSERT_NE(::mkdtemp(pattern.data()), nullptr);
    dir_ = pattern;
  }
  void TearDown() override { EXPECT_TRUE(RemoveAll(dir_).ok()); }

  std::string Path(absl::string_view name) const { return absl::StrCat(dir_, "/", name); }

  // A tensor whose bytes are a pattern that depends on `seed`, so swapped tensors are caught.
  Tensor Patterned(const Shape& shape, DType dtype, int seed) {
    Tensor t = Tensor::Empty(shape, dtype, MemoryTag::kParam, &allocator_);
    auto* p = static_cast<unsigned char*>(t.raw_data());
    for (size_t i = 0; i < t.nbytes(); ++i)
      p[i] = static_cast<unsigned char>(i * 29 + seed * 7 + 1);
    return t;
  }

  std::string dir_;
  Allocator allocator_;
};

TEST_F(SafetensorsTest, RoundTripsEveryDTypeIncludingEmptyAndScalar) {
  const std::vector<NamedTensor> tensors = {
      {"f32", Patterned({3, 5}, DType::kF32, 1)},
      {"bf16", Patterned({7}, DType::kBF16, 2)},
      {"f16", Patterned({2, 3, 2}, DType::kF16, 3)},
      {"f8e4m3", Patterned({9}, DType::kF8E4M3, 4)},
      {"f8e5m2", Patterned({1, 5}, DType::kF8E5M2, 5)},
      {"i32", Patterned({4}, DType::kI32, 6)},
      {"i64", Patterned({3}, DType::kI64, 7)},
      {"empty", Patterned({0, 3}, DType::kF32, 8)},
      {"scalar", Patterned({}, DType::kI64, 9)},
      {"empty.bf16", Patterned({4, 0}, DType::kBF16, 10)},
  };
  const std::string path = Path("all.safetensors");
  ASSERT_TRUE(WriteSafetensors(path, tensors).ok());

  // Layout: N is a multiple of 8 and the file is exactly prefix + header + the tensors' bytes.
  const std::string bytes = *ReadFile(path);
  uint64_t n = 0;
  for (int i = 7; i >= 0; --i) n = (n << 8) | static_cast<unsigned char>(bytes[i]);
  EXPECT_EQ(n % 8, 0u);
  size_t data_bytes = 0;
  for (const NamedTensor& nt : tensors) data_bytes += nt.tensor.nbytes();
  EXPECT_EQ(bytes.size(), 8 + n + data_bytes);
  EXPECT_EQ(bytes[8], '{');
  EXPECT_THAT(bytes.substr(8, n), HasSubstr(R"("scalar":{"dtype":"I64","shape":[],)"));
  EXPECT_THAT(bytes.substr(8, n), HasSubstr(R"("f8e4m3":{"dtype":"F8_E4M3","shape":[9],)"));

  Allocator reader_allocator;
  absl::StatusOr<SafetensorsFile> file =
      ReadSafetensors(path, MemoryTag::kOptimizer, &reader_allocator);
  ASSERT_TRUE(file.ok()) << file.status();
  EXPECT_TRUE(file->metadata.empty());
  ASSERT_EQ(file->tensors.size(), tensors.size());
  for (const NamedTensor& want : tensors) {
    const Tensor* got = file->Find(want.name);
    ASSERT_NE(got, nullptr) << want.name;
    EXPECT_EQ(got->dtype(), want.tensor.dtype()) << want.name;
    EXPECT_EQ(got->shape(), want.tensor.shape()) << want.name;
    EXPECT_EQ(got->tag(), MemoryTag::kOptimizer);
    EXPECT_TRUE(RawBytes(*got) == RawBytes(want.tensor)) << want.name;
  }
  for (size_t i = 0; i < tensors.size(); ++i) {
    EXPECT_EQ(file->tensors[i].name, tensors[i].name) << "data order differs at " << i;
  }
  EXPECT_EQ(file->Find("scalar")->numel(), 1);
  EXPECT_EQ(file->Find("nope"), nullptr);
  EXPECT_EQ(reader_allocator.Stats(MemoryTag::kOptimizer).current_bytes,
            static_cast<int64_t>(data_bytes));
}

TEST_F(SafetensorsTest, MetadataRoundTrips) {
  const std::map<std::string, std::string> metadata = {
      {"format", "pt"}, {"step", "1200"}, {"note", "quotes \" and\nnewlines, ünïcode"}, {"", ""}};
  const std::string path = Path("meta.safetensors");
  ASSERT_TRUE(WriteSafetensors(path, {{"w", Patterned({2}, DType::kF32, 1)}}, metadata).ok());
  absl::StatusOr<SafetensorsFile> file = ReadSafetensors(path);
  ASSERT_TRUE(file.ok()) << file.status();
  EXPECT_EQ(file->metadata, metadata);

  // No tensors at all, only metadata: a valid file with an empty data buffer.
  ASSERT_TRUE(WriteSafetensors(Path("only_meta.safetensors"), {}, {{"k", "v"}}).ok());
  absl::StatusOr<SafetensorsFile> empty = ReadSafetensors(Path("only_meta.safetensors"));
  ASSERT_TRUE(empty.ok()) << empty.status();
  EXPECT_TRUE(empty->tensors.empty());
  EXPECT_EQ(empty->metadata.at("k"), "v");
}

// What `safetensors.torch.save_file({"weight": torch.tensor([[1., 2.], [3., 4.]]),
// "bias": torch.tensor([0.5, -1.0], dtype=torch.bfloat16)}, path, metadata={"format": "pt"})`
// writes: compact JSON with __metadata__ first, entries in data order (F32 before BF16, the
// library sorts by alignment), padded with spaces to a multiple of 8, then little-endian data.
std::string PythonReferenceFile() {
  const std::string header =
      PadTo8(R"({"__metadata__":{"format":"pt"},)"
             R"("weight":{"dtype":"F32","shape":[2,2],"data_offsets":[0,16]},)"
             R"("bias":{"dtype":"BF16","shape":[2],"data_offsets":[16,20]}})");
  const std::string data = absl::StrCat(Le(0x3F800000, 4), Le(0x40000000, 4),  // 1, 2
                                        Le(0x40400000, 4), Le(0x40800000, 4),  // 3, 4
                                        Le(0x3F00, 2), Le(0xBF80, 2));         // 0.5, -1 (bf16)
  return Image(header, data);
}

TEST_F(SafetensorsTest, ReadsFileInPythonLibraryLayout) {
  const std::string reference = PythonReferenceFile();
  ASSERT_EQ((reference.size() - 8 - 20) % 8, 0u);
  const std::string path = Path("python.safetensors");
  ASSERT_TRUE(WriteFileAtomic(path, reference).ok());

  absl::StatusOr<SafetensorsFile> file = ReadSafetensors(path);
  ASSERT_TRUE(file.ok()) << file.status();
  ASSERT_EQ(file->tensors.size(), 2u);
  EXPECT_EQ(file->tensors[0].name, "weight");
  EXPECT_EQ(file->tensors[1].name, "bias");
  EXPECT_EQ(file->metadata, (std::map<std::string, std::string>{{"format", "pt"}}));
  const Tensor& weight = file->tensors[0].tensor;
  EXPECT_EQ(weight.dtype(), DType::kF32);
  EXPECT_EQ(weight.shape(), (Shape{2, 2}));
  EXPECT_EQ(weight.ToF32Vector(), (std::vector<float>{1, 2, 3, 4}));
  const Tensor& bias = file->tensors[1].tensor;
  EXPECT_EQ(bias.dtype(), DType::kBF16);
  EXPECT_EQ(bias.ToF32Vector(), (std::vector<float>{0.5f, -1.0f}));

  // Writing the same tensors in the same order reproduces the reference byte for byte.
  const std::string ours = Path("ours.safetensors");
  ASSERT_TRUE(WriteSafetensors(ours, file->tensors, file->metadata).ok());
  EXPECT_TRUE(*ReadFile(ours) == reference);
  absl::StatusOr<std::string> serialized = SerializeSafetensors(file->tensors, file->metadata);
  ASSERT_TRUE(serialized.ok());
  EXPECT_TRUE(*serialized == reference);
}

TEST_F(SafetensorsTest, ReadsHeaderInAnyKeyOrderAndWhitespace) {
  // Pretty-printed, metadata last, entries not in data order, no padding (N = odd), an empty
  // tensor, a scalar and integer data; the reader sorts by offset.
  std::string header = R"({
    "z.scalar": {"data_offsets": [12, 20], "shape": [], "dtype": "I64"},
    "a.empty":  {"dtype": "F16", "shape": [0], "data_offsets": [12, 12]},
    "m.ids":    {"shape": [3], "dtype": "I32", "data_offsets": [0, 12]},
    "__metadata__": {"source": "hand-written"}
  })";
  if (header.size() % 8 == 0) header.push_back('\n');
  ASSERT_NE(header.size() % 8, 0u);
  const std::string data = absl::StrCat(Le(7, 4), Le(static_cast<uint32_t>(-2), 4), Le(1 << 30, 4),
                                        Le(static_cast<uint64_t>(-5), 8));
  absl::StatusOr<SafetensorsFile> file = ParseSafetensors(Image(header, data), "<memory>");
  ASSERT_TRUE(file.ok()) << file.status();
  ASSERT_EQ(file->tensors.size(), 3u);
  EXPECT_EQ(file->tensors[0].name, "m.ids");
  EXPECT_EQ(file->tensors[1].name, "a.empty");
  EXPECT_EQ(file->tensors[2].name, "z.scalar");
  const int32_t* ids = file->Find("m.ids")->data<int32_t>();
  EXPECT_EQ(ids[0], 7);
  EXPECT_EQ(ids[1], -2);
  EXPECT_EQ(ids[2], 1 << 30);
  EXPECT_EQ(file->Find("a.empty")->numel(), 0);
  EXPECT_EQ(file->Find("z.scalar")->rank(), 0);
  EXPECT_EQ(file->Find("z.scalar")->data<int64_t>()[0], -5);
  EXPECT_EQ(file->metadata.at("source"), "hand-written");
}

struct BadFile {
  const char* what;
  std::string bytes;
  absl::StatusCode code;
  std::vector<std::string> message_parts;  // each must appear in the message
};

std::vector<BadFile> BadFiles() {
  const std::string a = R"("a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]})";
  const std::string eight(8, '\x11');
  using C = absl::StatusCode;
  return {
      {"shorter than 8 bytes", "abc", C::kDataLoss, {"is 3 bytes, shorter than the 8-byte"}},
      {"empty file", "", C::kDataLoss, {"is 0 bytes"}},
      {"header over 100 MiB",
       Le(uint64_t{200} << 20, 8) + "{}",
       C::kInvalidArgument,
       {"absurd header length 209715200", "100 MiB"}},
      {"header past end of file",
       Le(100, 8) + "{}",
       C::kDataLoss,
       {"absurd header length 100", "only 2 bytes follow"}},
      {"empty header", Image("", ""), C::kInvalidArgument, {"header is not valid JSON"}},
      {"header not JSON",
       Image(R"({"a": )", ""),
       C::kInvalidArgument,
       {"header is not valid JSON"}},
      {"header not UTF-8",
       Image("{\"\xff\xfe\": 1}", ""),
       C::kInvalidArgument,
       {"header is not valid JSON", "UTF-8"}},
      {"header not an object",
       Image("[1, 2]", ""),
       C::kInvalidArgument,
       {"header is an array, not a JSON object"}},
      {"entry not an object",
       Image(R"({"a": 5})", ""),
       C::kInvalidArgument,
       {"tensor 'a'", "header entry is a number, not an object"}},
      {"missing dtype",
       Image(R"({"a":{"shape":[2],"data_offsets":[0,8]}})", eight),
       C::kInvalidArgument,
       {"tensor 'a'", "missing 'dtype'"}},
      {"missing shape",
       Image(R"({"a":{"dtype":"F32","data_offsets":[0,8]}})", eight),
       C::kInvalidArgument,
       {"tensor 'a'", "missing 'shape'"}},
      {"missing data_offsets",
       Image(R"({"a":{"dtype":"F32","shape":[2]}})", eight),
       C::kInvalidArgument,
       {"tensor 'a'", "missing 'data_offsets'"}},
      {"dtype not a string",
       Image(R"({"a":{"dtype":4,"shape":[2],"data_offsets":[0,8]}})", eight),
       C::kInvalidArgument,
       {"tensor 'a'", "'dtype' is a number, not a string"}},
      {"shape not an array",
       Image(R"({"a":{"dtype":"F32","shape":"2","data_offsets":[0,8]}})", eight),
       C::kInvalidArgument,
       {"tensor 'a'", "'shape' is a string, not an array"}},
      {"shape with a fraction",
       Image(R"({"a":{"dtype":"F32","shape":[1.5],"data_offsets":[0,8]}})", eight),
       C::kInvalidArgument,
       {"tensor 'a'", "holds a non-integer 1.5"}},
      {"data_offsets of one number",
       Image(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[8]}})", eight),
       C::kInvalidArgument,
       {"tensor 'a'", "data_offsets must be [begin, end]", "[8]"}},
      {"negative data_offsets",
       Image(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[-8,0]}})", eight),
       C::kInvalidArgument,
       {"tensor 'a'", "data_offsets must be [begin, end]"}},
      {"unknown dtype",
       Image(R"({"a":{"dtype":"F33","shape":[2],"data_offsets":[0,8]}})", eight),
       C::kInvalidArgument,
       {"tensor 'a'", "unknown dtype 'F33'"}},
      {"dtype loom lacks",
       Image(R"({"a":{"dtype":"F64","shape":[1],"data_offsets":[0,8]}})", eight),
       C::kUnimplemented,
       {"tensor 'a'", "dtype 'F64' is not supported"}},
      {"negative dimension",
       Image(R"({"a":{"dtype":"F32","shape":[2,-3],"data_offsets":[0,8]}})", eight),
       C::kInvalidArgument,
       {"tensor 'a'", "negative dimension -3 in shape [2,-3]"}},
      {"shape too large to address",
       Image(R"({"a":{"dtype":"F32","shape":[4611686018427387904,4],"data_offsets":[0,8]}})",
             eight),
       C::kInvalidArgument,
       {"tensor 'a'", "too large"}},
      {"end before begin",
       Image(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[8,0]}})", eight),
       C::kInvalidArgument,
       {"tensor 'a'", "data_offsets [8, 0) have end < begin"}},
      {"byte size does not match shape",
       Image(R"({"h.0.attn.c_attn.weight":{"dtype":"F32","shape":[3,4],"data_offsets":[0,100]}})",
             std::string(100, '\0')),
       C::kInvalidArgument,
       {"tensor 'h.0.attn.c_attn.weight': data_offsets [0, 100) do not match shape [3, 4] f32 "
        "(48 bytes)"}},
      {"gap between tensors",
       Image(absl::StrCat("{", a, R"(,"b":{"dtype":"I32","shape":[1],"data_offsets":[12,16]}})"),
             std::string(16, '\0')),
       C::kInvalidArgument,
       {"tensor 'b': data_offsets [12, 16) leave a 4-byte gap after tensor 'a' (which ends at 8)",
        "contiguous"}},
      {"overlapping tensors",
       Image(absl::StrCat("{", a, R"(,"b":{"dtype":"I32","shape":[1],"data_offsets":[4,8]}})"),
             eight),
       C::kInvalidArgument,
       {"tensor 'b': data_offsets [4, 8) overlap tensor 'a' (which ends at 8)", "contiguous"}},
      {"first tensor not at 0",
       Image(R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}})", eight),
       C::kInvalidArgument,
       {"tensor 'a': data_offsets [4, 8) do not start at 0"}},
      {"trailing bytes",
       Image(absl::StrCat("{", a, "}"), eight + "xy"),
       C::kInvalidArgument,
       {"2 trailing bytes", "tensors end at offset 8", "data buffer is 10 bytes"}},
      {"truncated data",
       Image(absl::StrCat("{", a, "}"), "12345"),
       C::kDataLoss,
       {"truncated", "need 8 bytes", "only 5 bytes"}},
      {"duplicate tensor names",
       Image(absl::StrCat("{", a, ",", a, "}"), eight),
       C::kInvalidArgument,
       {"duplicate tensor name 'a'"}},
      {"duplicate key in an entry",
       Image(R"({"a":{"dtype":"F32","dtype":"I32","shape":[2],"data_offsets":[0,8]}})", eight),
       C::kInvalidArgument,
       {"tensor 'a': duplicate key 'dtype'"}},
      {"metadata not an object",
       Image(R"({"__metadata__":[]})", ""),
       C::kInvalidArgument,
       {"__metadata__ is an array, not an object"}},
      {"metadata value not a string",
       Image(R"({"__metadata__":{"epoch":3}})", ""),
       C::kInvalidArgument,
       {"__metadata__ value of 'epoch' is a number, not a string"}},
  };
}

TEST_F(SafetensorsTest, EveryMalformedFileIsRejectedWithTheFileAndTheCheck) {
  for (const BadFile& bad : BadFiles()) {
    SCOPED_TRACE(bad.what);
    const std::string path = Path("bad.safetensors");
    ASSERT_TRUE(WriteFileAtomic(path, bad.bytes).ok());
    absl::StatusOr<SafetensorsFile> file = ReadSafetensors(path, MemoryTag::kParam, &allocator_);
    ASSERT_FALSE(file.ok());
    EXPECT_EQ(file.status().code(), bad.code) << file.status();
    EXPECT_THAT(file.status().message(), HasSubstr(path + ": "));
    for (const std::string& part : bad.message_parts) {
      EXPECT_THAT(file.status().message(), HasSubstr(part));
    }
    // The in-memory parser applies the same checks and names its source.
    absl::StatusOr<SafetensorsFile> parsed = ParseSafetensors(bad.bytes, "ckpt/model");
    ASSERT_FALSE(parsed.ok());
    EXPECT_EQ(parsed.status().code(), bad.code);
    EXPECT_THAT(parsed.status().message(), HasSubstr("ckpt/model: "));
  }
  // Nothing was allocated for any rejected file.
  EXPECT_EQ(allocator_.TotalCurrentBytes(), 0);
}

TEST_F(SafetensorsTest, WellFormedVariantsOfTheBadFilesLoad) {
  // Guards the table above: the well-formed variants of the corrupted files load.
  const std::string a = R"("a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]})";
  EXPECT_TRUE(ParseSafetensors(Image(absl::StrCat("{", a, "}"), std::string(8, '\0')), "ok").ok());
  EXPECT_TRUE(
      ParseSafetensors(
          Image(absl::StrCat("{", a, R"(,"b":{"dtype":"I32","shape":[1],"data_offsets":[8,12]}})"),
                std::string(12, '\0')),
          "ok")
          .ok());
  EXPECT_TRUE(ParseSafetensors(Image("{}", ""), "ok").ok());
  EXPECT_TRUE(ParseSafetensors(Image("  {}  ", ""), "ok").ok());
}

TEST_F(SafetensorsTest, MissingFileIsNotFound) {
  absl::StatusOr<SafetensorsFile> file = ReadSafetensors(Path("absent.safetensors"));
  EXPECT_EQ(file.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(file.status().message(), HasSubstr(Path("absent.safetensors")));
}

TEST_F(SafetensorsTest, WriterRejectsBadTensorListsAndLeavesOldFileIntact) {
  const std::string path = Path("w.safetensors");
  ASSERT_TRUE(WriteFileAtomic(path, "previous").ok());
  const Tensor t = Patterned({2}, DType::kF32, 1);

  absl::Status dup = WriteSafetensors(path, {{"x", t}, {"y", t}, {"x", t}});
  EXPECT_EQ(dup.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(dup.message(), HasSubstr(path));
  EXPECT_THAT(dup.message(), HasSubstr("tensor 'x': duplicate name"));

  absl::Status reserved = WriteSafetensors(path, {{"__metadata__", t}});
  EXPECT_EQ(reserved.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(reserved.message(), HasSubstr("reserved"));

  absl::Status undefined = WriteSafetensors(path, {{"u", Tensor()}});
  EXPECT_EQ(undefined.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(undefined.message(), HasSubstr("tensor 'u': undefined tensor"));

  absl::Status bad_utf8 = WriteSafetensors(path, {{"bad\xff", t}});
  EXPECT_EQ(bad_utf8.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(bad_utf8.message(), HasSubstr(R"(tensor name "bad\xff" is not valid UTF-8)"));
  absl::Status bad_meta = WriteSafetensors(path, {{"x", t}}, {{"k", "\xc3"}});
  EXPECT_EQ(bad_meta.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(bad_meta.message(), HasSubstr("metadata value of 'k'"));

  absl::Status no_dir = WriteSafetensors(Path("no/dir/w.safetensors"), {{"x", t}});
  EXPECT_EQ(no_dir.code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(no_dir.message(), HasSubstr(Path("no/dir/w.safetensors")));

  EXPECT_EQ(*ReadFile(path), "previous");
  EXPECT_EQ(*ListDirectory(dir_), std::vector<std::string>{"w.safetensors"});
}

TEST_F(SafetensorsTest, LargeTensorRoundTripsThroughPositionedReads) {
  // 6 MiB across two tensors: the reader fills each tensor's storage straight from the file.
  const std::vector<NamedTensor> tensors = {{"big", Patterned({1024, 1024}, DType::kF32, 3)},
                                            {"big2", Patterned({1 << 20}, DType::kBF16, 4)}};
  ASSERT_TRUE(WriteSafetensors(Path("big.safetensors"), tensors).ok());
  absl::StatusOr<SafetensorsFile> file = ReadSafetensors(Path("big.safetensors"));
  ASSERT_TRUE(file.ok()) << file.status();
  EXPECT_TRUE(RawBytes(*file->Find("big")) == RawBytes(tensors[0].tensor));
  EXPECT_TRUE(RawBytes(*file->Find("big2")) == RawBytes(tensors[1].tensor));
}

}  // namespace
}  // namespace loom::runtime::io
