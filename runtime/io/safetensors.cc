#include "runtime/io/safetensors.h"

#include <algorithm>
#include <bit>
#include <cstdint>
#include <cstring>
#include <limits>
#include <nlohmann/json.hpp>
#include <set>
#include <utility>

#include "absl/functional/function_ref.h"
#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "runtime/base/status_macros.h"
#include "runtime/io/file.h"

namespace loom::runtime::io {
namespace {

using Json = nlohmann::json;
using OrderedJson = nlohmann::ordered_json;

// Tensor data is copied byte for byte between memory and file, and safetensors is little-endian.
static_assert(std::endian::native == std::endian::little,
              "safetensors I/O assumes a little-endian host");

constexpr uint64_t kLengthPrefixBytes = 8;
// The reference implementation refuses headers over 100 MB; a real header is a few MB at most.
constexpr uint64_t kMaxHeaderBytes = uint64_t{100} << 20;
constexpr absl::string_view kMetadataKey = "__metadata__";
constexpr absl::string_view kSupportedDTypes = "F32, BF16, F16, F8_E4M3, F8_E5M2, I32, I64";

absl::string_view SafetensorsDTypeName(DType dtype) {
  switch (dtype) {
    case DType::kF32:
      return "F32";
    case DType::kBF16:
      return "BF16";
    case DType::kF16:
      return "F16";
    case DType::kF8E4M3:
      return "F8_E4M3";
    case DType::kF8E5M2:
      return "F8_E5M2";
    case DType::kI32:
      return "I32";
    case DType::kI64:
      return "I64";
  }
  LOOM_CHECK(false) << "unhandled DType " << static_cast<int>(dtype);
  return "";
}

// Maps a safetensors dtype name to a DType. Unimplemented for dtypes the format defines but loom
// does not have, InvalidArgument for names the format does not define.
absl::StatusOr<DType> ParseDType(const std::string& name, absl::string_view context) {
  for (DType dtype : {DType::kF32, DType::kBF16, DType::kF16, DType::kF8E4M3, DType::kF8E5M2,
                      DType::kI32, DType::kI64}) {
    if (name == SafetensorsDTypeName(dtype)) return dtype;
  }
  constexpr absl::string_view kOtherSafetensorsDTypes[] = {
      "BOOL", "U8",  "I8",      "I16",     "U16",     "U32", "U64",
      "F64",  "C64", "F8_E8M0", "F6_E2M3", "F6_E3M2", "F4"};
  if (std::find(std::begin(kOtherSafetensorsDTypes), std::end(kOtherSafetensorsDTypes), name) !=
      std::end(kOtherSafetensorsDTypes)) {
    return absl::UnimplementedError(
        absl::StrCat(context, "dtype '", name,
                     "' is not supported by loom (supported: ", kSupportedDTypes, ")"));
  }
  return absl::InvalidArgumentError(
      absl::StrCat(context, "unknown dtype '", name, "' (loom reads ", kSupportedDTypes, ")"));
}

// "a number", "an array", ... for error messages.
std::string Kind(const Json& value) {
  if (value.is_null()) return "null";
  const absl::string_view name = value.type_name();
  const bool vowel = absl::string_view("aeiou").find(name.front()) != absl::string_view::npos;
  return absl::StrCat(vowel ? "an " : "a ", name);
}

// A JSON value for an error message, shortened so a huge array cannot flood the log.
std::string Brief(const Json& value) {
  std::string text = value.dump(-1, ' ', false, Json::error_handler_t::replace);
  if (text.size() > 80) text = absl::StrCat(text.substr(0, 77), "...");
  return text;
}

struct Entry {
  std::string name;
  DType dtype;
  Shape shape;
  uint64_t begin = 0;
  uint64_t end = 0;
};

struct Header {
  std::vector<Entry> entries;  // sorted by data offset
  std::map<std::string, std::string> metadata;
};

// Parses the JSON text of the header, reporting duplicate keys (which JSON parsers otherwise
// resolve silently, last one wins).
absl::StatusOr<Json> ParseJson(absl::string_view text, absl::string_view source) {
  std::vector<std::set<std::string>> keys_per_object;
  std::string tensor;  // the top-level key being parsed
  std::string duplicate_error;
  auto callback = [&](int depth, Json::parse_event_t event, Json& parsed) {
    if (event == Json::parse_event_t::object_start) {
      keys_per_object.emplace_back();
    } else if (event == Json::parse_event_t::object_end) {
      keys_per_object.pop_back();
    } else if (event == Json::parse_event_t::key && parsed.is_string()) {
      const std::string& key = parsed.get_ref<const std::string&>();
      if (depth == 1) tensor = key;
      if (!keys_per_object.back().insert(key).second && duplicate_error.empty()) {
        if (depth == 1) {
          duplicate_error = absl::StrCat("duplicate tensor name '", key, "' in the header");
        } else {
          duplicate_error =
              absl::StrCat(tensor == kMetadataKey ? std::string(kMetadataKey)
                                                  : absl::StrCat("tensor '", tensor, "'"),
                           ": duplicate key '", key, "'");
        }
      }
    }
    return true;
  };
  Json json;
  try {
    json = Json::parse(text.data(), text.data() + text.size(), callback);
  } catch (const Json::exception& e) {
    absl::string_view what = e.what();
    // Drop nlohmann's "[json.exception.parse_error.101] " prefix.
    if (const size_t close = what.find("] "); close != absl::string_view::npos) {
      what.remove_prefix(close + 2);
    }
    return absl::InvalidArgumentError(
        absl::StrCat(source, ": header is not valid JSON (", what, ")"));
  }
  if (!duplicate_error.empty()) {
    return absl::InvalidArgumentError(absl::StrCat(source, ": ", duplicate_error));
  }
  return json;
}

absl::StatusOr<Entry> ParseEntry(const std::string& name, const Json& value,
                                 absl::string_view source) {
  const std::string context = absl::StrCat(source, ": tensor '", name, "': ");
  if (!value.is_object()) {
    return absl::InvalidArgumentError(
        absl::StrCat(context, "header entry is ", Kind(value), ", not an object"));
  }
  Entry entry;
  entry.name = name;
  for (const char* field : {"dtype", "shape", "data_offsets"}) {
    if (!value.contains(field)) {
      return absl::InvalidArgumentError(
          absl::StrCat(context, "missing '", field, "' in header entry ", Brief(value)));
    }
  }

  const Json& dtype = value["dtype"];
  if (!dtype.is_string()) {
    return absl::InvalidArgumentError(
        absl::StrCat(context, "'dtype' is ", Kind(dtype), ", not a string"));
  }
  LOOM_ASSIGN_OR_RETURN(entry.dtype, ParseDType(dtype.get<std::string>(), context));

  const Json& shape = value["shape"];
  if (!shape.is_array()) {
    return absl::InvalidArgumentError(
        absl::StrCat(context, "'shape' is ", Kind(shape), ", not an array"));
  }
  for (const Json& dim : shape) {
    if (!dim.is_number_integer()) {
      return absl::InvalidArgumentError(
          absl::StrCat(context, "shape ", Brief(shape), " holds a non-integer ", Brief(dim)));
    }
    if (!dim.is_number_unsigned()) {
      return absl::InvalidArgumentError(absl::StrCat(
          context, "negative dimension ", dim.get<int64_t>(), " in shape ", Brief(shape)));
    }
    const uint64_t d = dim.get<uint64_t>();
    if (d > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) {
      return absl::InvalidArgumentError(
          absl::StrCat(context, "dimension ", d, " in shape ", Brief(shape), " is too large"));
    }
    entry.shape.push_back(static_cast<int64_t>(d));
  }

  const Json& offsets = value["data_offsets"];
  if (!offsets.is_array() || offsets.size() != 2 || !offsets[0].is_number_unsigned() ||
      !offsets[1].is_number_unsigned()) {
    return absl::InvalidArgumentError(
        absl::StrCat(context, "data_offsets must be [begin, end] with two non-negative integers, ",
                     "got ", Brief(offsets)));
  }
  entry.begin = offsets[0].get<uint64_t>();
  entry.end = offsets[1].get<uint64_t>();
  if (entry.end < entry.begin) {
    return absl::InvalidArgumentError(absl::StrCat(context, "data_offsets [", entry.begin, ", ",
                                                   entry.end, ") have end < begin"));
  }

  // Element count and byte size, refusing shapes whose size does not fit in 64 bits.
  uint64_t bytes = DTypeSize(entry.dtype);
  bool overflow = false;
  for (int64_t d : entry.shape) {
    overflow = overflow || __builtin_mul_overflow(bytes, static_cast<uint64_t>(d), &bytes);
  }
  if (overflow || bytes > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) {
    return absl::InvalidArgumentError(absl::StrCat(context, "shape ", ShapeToString(entry.shape),
                                                   " ", DTypeName(entry.dtype),
                                                   " is too large to address"));
  }
  if (entry.end - entry.begin != bytes) {
    return absl::InvalidArgumentError(absl::StrCat(
        context, "data_offsets [", entry.begin, ", ", entry.end, ") do not match shape ",
        ShapeToString(entry.shape), " ", DTypeName(entry.dtype), " (", bytes, " bytes)"));
  }
  return entry;
}

// Parses and checks the header; `buffer_bytes` is the size of the data buffer that follows it.
absl::StatusOr<Header> ParseHeader(absl::string_view text, uint64_t buffer_bytes,
                                   absl::string_view source) {
  LOOM_ASSIGN_OR_RETURN(Json json, ParseJson(text, source));
  if (!json.is_object()) {
    return absl::InvalidArgumentError(
        absl::StrCat(source, ": header is ", Kind(json), ", not a JSON object"));
  }
  Header header;
  for (const auto& [key, value] : json.items()) {
    if (key == kMetadataKey) {
      if (!value.is_object()) {
        return absl::InvalidArgumentError(
            absl::StrCat(source, ": ", kMetadataKey, " is ", Kind(value), ", not an object"));
      }
      for (const auto& [meta_key, meta_value] : value.items()) {
        if (!meta_value.is_string()) {
          return absl::InvalidArgumentError(absl::StrCat(source, ": ", kMetadataKey, " value of '",
                                                         meta_key, "' is ", Kind(meta_value),
                                                         ", not a string"));
        }
        header.metadata[meta_key] = meta_value.get<std::string>();
      }
      continue;
    }
    LOOM_ASSIGN_OR_RETURN(Entry entry, ParseEntry(key, value, source));
    header.entries.push_back(std::move(entry));
  }

  // The header may list tensors in any order; their data must tile the buffer. Empty tensors may
  // share an offset; among those the (stable) name order from the JSON object is kept.
  std::stable_sort(header.entries.begin(), header.entries.end(),
                   [](const Entry& a, const Entry& b) {
                     return std::pair(a.begin, a.end) < std::pair(b.begin, b.end);
                   });
  uint64_t expected = 0;
  const Entry* previous = nullptr;
  for (const Entry& e : header.entries) {
    if (e.begin != expected) {
      const std::string where = absl::StrCat(source, ": tensor '", e.name, "': data_offsets [",
                                             e.begin, ", ", e.end, ") ");
      if (previous == nullptr) {
        return absl::InvalidArgumentError(absl::StrCat(
            where, "do not start at 0, where the data buffer begins; tensors must be contiguous"));
      }
      return absl::InvalidArgumentError(absl::StrCat(
          where,
          e.begin > expected ? absl::StrCat("leave a ", e.begin - expected, "-byte gap after")
                             : "overlap",
          " tensor '", previous->name, "' (which ends at ", expected,
          "); tensors must be contiguous"));
    }
    expected = e.end;
    previous = &e;
  }
  if (expected < buffer_bytes) {
    return absl::InvalidArgumentError(absl::StrCat(
        source, ": ", buffer_bytes - expected, " trailing bytes: the tensors end at offset ",
        expected, " but the data buffer is ", buffer_bytes, " bytes"));
  }
  if (expected > buffer_bytes) {
    return absl::DataLossError(absl::StrCat(source, ": truncated: the tensors need ", expected,
                                            " bytes of data but the data buffer is only ",
                                            buffer_bytes, " bytes"));
  }
  return header;
}

// Reads a safetensors image of `total_bytes` through `read_at(offset, dst, n)`.
absl::StatusOr<SafetensorsFile> ReadImage(
    uint64_t total_bytes, absl::FunctionRef<absl::Status(uint64_t, void*, size_t)> read_at,
    absl::string_view source, MemoryTag tag, Allocator* allocator) {
  if (total_bytes < kLengthPrefixBytes) {
    return absl::DataLossError(absl::StrCat(
        source, ": file is ", total_bytes,
        " bytes, shorter than the 8-byte header length that starts a safetensors file"));
  }
  unsigned char prefix[kLengthPrefixBytes];
  LOOM_RETURN_IF_ERROR(read_at(0, prefix, kLengthPrefixBytes));
  uint64_t header_bytes = 0;
  for (int i = 7; i >= 0; --i) header_bytes = (header_bytes << 8) | prefix[i];
  const uint64_t after_prefix = total_bytes - kLengthPrefixBytes;
  if (header_bytes > kMaxHeaderBytes) {
    return absl::InvalidArgumentError(absl::StrCat(source, ": absurd header length ", header_bytes,
                                                   " (over the 100 MiB limit); not a safetensors "
                                                   "file?"));
  }
  if (header_bytes > after_prefix) {
    return absl::DataLossError(
        absl::StrCat(source, ": absurd header length ", header_bytes, ": only ", after_prefix,
                     " bytes follow the 8-byte length (truncated, or not a safetensors file)"));
  }
  std::string text(header_bytes, '\0');
  LOOM_RETURN_IF_ERROR(read_at(kLengthPrefixBytes, text.data(), text.size()));
  LOOM_ASSIGN_OR_RETURN(Header header, ParseHeader(text, after_prefix - header_bytes, source));

  SafetensorsFile file;
  file.metadata = std::move(header.metadata);
  file.tensors.reserve(header.entries.size());
  const uint64_t data_start = kLengthPrefixBytes + header_bytes;
  for (Entry& e : header.entries) {
    Tensor t = Tensor::Empty(e.shape, e.dtype, tag, allocator);
    if (t.nbytes() > 0) {
      LOOM_RETURN_IF_ERROR(read_at(data_start + e.begin, t.raw_data(), t.nbytes()));
    }
    file.tensors.push_back({std::move(e.name), std::move(t)});
  }
  return file;
}

// InvalidArgument unless `text` is valid UTF-8 (JSON strings must be); `what` names the string.
absl::Status CheckUtf8(const std::string& text, absl::string_view what) {
  try {
    (void)Json(text).dump();
  } catch (const Json::exception&) {
    return absl::InvalidArgumentError(
        absl::StrCat(what, " \"", absl::CHexEscape(text), "\" is not valid UTF-8"));
  }
  return absl::OkStatus();
}

// Checks `tensors` and builds the header JSON, padded with spaces to a multiple of 8 bytes.
absl::StatusOr<std::string> BuildHeader(const std::vector<NamedTensor>& tensors,
                                        const std::map<std::string, std::string>& metadata) {
  OrderedJson json = OrderedJson::object();
  if (!metadata.empty()) {
    OrderedJson meta = OrderedJson::object();
    for (const auto& [key, value] : metadata) {
      LOOM_RETURN_IF_ERROR(CheckUtf8(key, "metadata key"));
      LOOM_RETURN_IF_ERROR(CheckUtf8(value, absl::StrCat("metadata value of '", key, "'")));
      meta[key] = value;
    }
    json[std::string(kMetadataKey)] = std::move(meta);
  }
  std::set<absl::string_view> names;
  uint64_t offset = 0;
  for (const NamedTensor& nt : tensors) {
    LOOM_RETURN_IF_ERROR(CheckUtf8(nt.name, "tensor name"));
    const std::string context = absl::StrCat("tensor '", nt.name, "': ");
    if (nt.name == kMetadataKey) {
      return absl::InvalidArgumentError(
          absl::StrCat(context, "the name ", kMetadataKey, " is reserved for the metadata"));
    }
    if (!names.insert(nt.name).second) {
      return absl::InvalidArgumentError(
          absl::StrCat(context, "duplicate name; tensor names must be unique"));
    }
    if (!nt.tensor.defined()) {
      return absl::InvalidArgumentError(absl::StrCat(context, "undefined tensor"));
    }
    if (nt.tensor.device() != Device::kCpu) {
      return absl::FailedPreconditionError(absl::StrCat(
          context, nt.tensor.DebugString(), " is not in host memory; copy it to the host first"));
    }
    const uint64_t bytes = nt.tensor.nbytes();
    json[nt.name] = {{"dtype", SafetensorsDTypeName(nt.tensor.dtype())},
                     {"shape", nt.tensor.shape()},
                     {"data_offsets", {offset, offset + bytes}}};
    offset += bytes;
  }
  // Every string was checked above, so dump() cannot throw.
  std::string text = json.dump();
  // Pad with spaces so the data buffer starts 8-byte aligned, as the Python library does.
  text.append((8 - text.size() % 8) % 8, ' ');
  return text;
}

std::string LengthPrefix(uint64_t n) {
  std::string prefix(kLengthPrefixBytes, '\0');
  for (size_t i = 0; i < kLengthPrefixBytes; ++i) {
    prefix[i] = static_cast<char>((n >> (8 * i)) & 0xFF);
  }
  return prefix;
}

}  // namespace

const Tensor* SafetensorsFile::Find(absl::string_view name) const {
  for (const NamedTensor& nt : tensors) {
    if (nt.name == name) return &nt.tensor;
  }
  return nullptr;
}

absl::Status WriteSafetensors(const std::string& path, const std::vector<NamedTensor>& tensors,
                              const std::map<std::string, std::string>& metadata) {
  absl::StatusOr<std::string> header = BuildHeader(tensors, metadata);
  if (!header.ok()) {
    return absl::Status(header.status().code(),
                        absl::StrCat(path, ": ", header.status().message()));
  }
  LOOM_ASSIGN_OR_RETURN(AtomicFileWriter writer, AtomicFileWriter::Open(path));
  LOOM_RETURN_IF_ERROR(writer.Append(LengthPrefix(header->size())));
  LOOM_RETURN_IF_ERROR(writer.Append(*header));
  for (const NamedTensor& nt : tensors) {
    LOOM_RETURN_IF_ERROR(writer.Append(nt.tensor.raw_data(), nt.tensor.nbytes()));
  }
  return writer.Commit();
}

absl::StatusOr<std::string> SerializeSafetensors(
    const std::vector<NamedTensor>& tensors, const std::map<std::string, std::string>& metadata) {
  LOOM_ASSIGN_OR_RETURN(std::string header, BuildHeader(tensors, metadata));
  std::string out = LengthPrefix(header.size());
  out += header;
  for (const NamedTensor& nt : tensors) {
    if (nt.tensor.nbytes() > 0) {
      out.append(static_cast<const char*>(nt.tensor.raw_data()), nt.tensor.nbytes());
    }
  }
  return out;
}

absl::StatusOr<SafetensorsFile> ReadSafetensors(const std::string& path, MemoryTag tag,
                                                Allocator* allocator) {
  LOOM_ASSIGN_OR_RETURN(RandomAccessFile file, RandomAccessFile::Open(path));
  return ReadImage(
      file.size(),
      [&file](uint64_t offset, void* dst, size_t n) { return file.ReadAt(offset, dst, n); }, path,
      tag, allocator);
}

absl::StatusOr<SafetensorsFile> ParseSafetensors(absl::string_view bytes, absl::string_view source,
                                                 MemoryTag tag, Allocator* allocator) {
  return ReadImage(
      bytes.size(),
      [bytes, source](uint64_t offset, void* dst, size_t n) {
        if (offset > bytes.size() || n > bytes.size() - offset) {
          return absl::DataLossError(absl::StrCat(source, ": read of ", n, " bytes at offset ",
                                                  offset, " past the end (", bytes.size(),
                                                  " bytes)"));
        }
        if (n > 0) std::memcpy(dst, bytes.data() + offset, n);
        return absl::OkStatus();
      },
      source, tag, allocator);
}

}  // namespace loom::runtime::io
