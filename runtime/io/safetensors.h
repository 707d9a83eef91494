// Reading and writing tensors in Hugging Face's safetensors format, the exchange format of model
// weights (what transformers' save_pretrained and safetensors.torch.save_file write).
//
//   std::vector<NamedTensor> params = {{"wte.weight", wte}, {"h.0.ln_1.weight", ln1}};
//   LOOM_RETURN_IF_ERROR(WriteSafetensors("/ckpt/model.safetensors", params, {{"format", "pt"}}));
//   LOOM_ASSIGN_OR_RETURN(SafetensorsFile file, ReadSafetensors("/ckpt/model.safetensors"));
//   const Tensor* wte2 = file.Find("wte.weight");   // nullptr if absent
//
// Layout: an 8-byte little-endian u64 N, N bytes of UTF-8 JSON (padded with spaces to a multiple
// of 8 when written here), then the data buffer:
//   {"__metadata__": {"format": "pt"},                              <- optional, str -> str
//    "wte.weight": {"dtype": "F32", "shape": [50257, 768], "data_offsets": [0, 154389504]}, ...}
// data_offsets are [begin, end) byte offsets into the buffer; the tensors tile the buffer exactly
// (sorted by begin, the first at 0, each starting where the previous ended, the last ending at the
// end of the file). Elements are little-endian, row-major. dtypes: F32, BF16, F16, F8_E4M3 (the
// "fn" variant, torch.float8_e4m3fn), F8_E5M2, I32, I64; shape [] is a scalar and a 0 in the
// shape an empty tensor. Files are written as the Python library writes them: compact JSON,
// "__metadata__" first, entries in data order, header padded with spaces to a multiple of 8.
//
// Errors name the file, the tensor and the check that failed:
//   "/x/model.safetensors: tensor 'h.0.attn.c_attn.weight': data_offsets [0, 100) do not match
//    shape [3, 4] f32 (48 bytes)"
// InvalidArgument for a malformed header or layout, DataLoss where the file is shorter than its
// header says (truncated), Unimplemented for a valid safetensors dtype loom lacks (F64, U8, ...),
// and the errno-derived code of file.h for I/O failures. A bad file never aborts the process.
#pragma once

#include <map>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "runtime/allocator.h"
#include "runtime/tensor.h"

namespace loom::runtime::io {

struct NamedTensor {
  std::string name;
  Tensor tensor;
};

// The contents of a safetensors file. The tensors own their (host) storage.
struct SafetensorsFile {
  std::vector<NamedTensor> tensors;  // in data order (empty tensors at one offset: by name)
  std::map<std::string, std::string> metadata;

  // The tensor called `name`, or nullptr. Linear search; the pointer lives as long as `tensors`.
  const Tensor* Find(absl::string_view name) const;
};

// Writes `tensors` (host, defined) to `path` atomically (WriteFileAtomic semantics: the old file
// stays intact on failure), their data in the given order and streamed from the tensors without
// an intermediate copy. InvalidArgument for a duplicate or reserved ("__metadata__") name or
// an undefined tensor; FailedPrecondition for a tensor not in host memory.
absl::Status WriteSafetensors(const std::string& path, const std::vector<NamedTensor>& tensors,
                              const std::map<std::string, std::string>& metadata = {});

// Reads and validates the whole file at `path`; nothing is allocated until the header has passed
// every check. Tensors are allocated with `tag` from `allocator` (Allocator::Default() if null)
// and read straight into their storage.
absl::StatusOr<SafetensorsFile> ReadSafetensors(const std::string& path,
                                                MemoryTag tag = MemoryTag::kParam,
                                                Allocator* allocator = nullptr);

// In-memory forms of the two above, e.g. for a checkpoint file (runtime/io/checkpoint.h).
// `source` names the bytes in error messages (a path, "<memory>").
absl::StatusOr<std::string> SerializeSafetensors(
    const std::vector<NamedTensor>& tensors,
    const std::map<std::string, std::string>& metadata = {});
absl::StatusOr<SafetensorsFile> ParseSafetensors(absl::string_view bytes, absl::string_view source,
                                                 MemoryTag tag = MemoryTag::kParam,
                                                 Allocator* allocator = nullptr);

}  // namespace loom::runtime::io
