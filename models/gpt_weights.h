// GPT weights as safetensors with Hugging Face GPT-2 names and layouts.
//
//   LOOM_ASSIGN_OR_RETURN(auto tensors, GptParameterTensors(model));
//   LOOM_RETURN_IF_ERROR(WriteGptWeights(model.config(), tensors, "/out/model.safetensors"));
//   LOOM_RETURN_IF_ERROR(ImportGptWeights(model, "/hf/gpt2/model.safetensors"));
//
// Export writes every parameter (f32, in model order, Conv1D weights [in, out]) plus metadata
// {"format": "pt", "loom_config": ...}; the tied LM head is not written (as transformers does).
// Import accepts such files and those of transformers' GPT2LMHeadModel: a "transformer." prefix is
// stripped, "lm_head.weight" must equal "wte.weight" (tied), the attention-mask buffers
// "h.N.attn.bias" / "h.N.attn.masked_bias" are skipped, and bf16/f16 tensors are widened to f32.
// Any other unknown name, a missing parameter or a shape mismatch is InvalidArgument naming the
// file and the tensor; nothing in the model changes unless the whole file is valid.
// Files always hold whole tensors: under tensor parallelism import cuts each rank's shard out of
// them, and GptParameterTensors gathers the shards over the model's tp group (collective over it;
// one rank writes), so a file is the same whatever the layout (Trainer::ExportWeights also
// gathers the pipeline's stages and ZeRO shards).
#pragma once

#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "models/gpt.h"
#include "runtime/io/safetensors.h"

namespace loom::models {

// The model's parameters whole, as (name, value) pairs: sharing storage where a parameter is not
// split, gathered over the model's tp group where it is (collective over that group). Parameters
// this rank does not hold (other pipeline stages') are left out.
absl::StatusOr<std::vector<runtime::io::NamedTensor>> GptParameterTensors(GptModel& model);
// Writes whole `tensors` (GptParameterTensors') as an export of a model with `config`.
absl::Status WriteGptWeights(const GptConfig& config,
                             const std::vector<runtime::io::NamedTensor>& tensors,
                             const std::string& path);

// Copies `file`'s tensors into the (allocated) model; `source` names the file in errors.
absl::Status LoadGptWeights(GptModel& model, const runtime::io::SafetensorsFile& file,
                            const std::string& source);
absl::Status ImportGptWeights(GptModel& model, const std::string& path);

}  // namespace loom::models
