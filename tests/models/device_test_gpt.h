// The small GPT and the precisions the device tests share: gpt_device_path_test (on the emulated
// device) and gpt_cuda_test (on a GPU).
#pragma once

#include <gtest/gtest.h>

#include <string>

#include "models/gpt.h"
#include "runtime/dtype.h"

namespace loom::models::testing {

// The GPT-2 variant (LayerNorm, GELU, tied embedding; a vocabulary that is a multiple of
// nothing), or with `llama` the RMSNorm + SwiGLU one: 2 blocks, 4 heads of 16, context 32.
inline GptConfig SmallDeviceGpt(bool llama) {
  GptConfig c;
  c.name = "test";
  c.vocab_size = 97;
  c.context_length = 32;
  c.num_layers = 2;
  c.num_heads = 4;
  c.dim = 64;
  c.mlp = llama ? GptConfig::Mlp::kSwiGlu : GptConfig::Mlp::kGelu;
  c.norm = llama ? GptConfig::Norm::kRMSNorm : GptConfig::Norm::kLayerNorm;
  c.init_std = 0.1f;
  return c;
}

struct DevicePrecision {
  runtime::DType activations;
  bool autocast;       // bf16 operands in the forward GEMMs and attention too
  bool llama = false;  // RMSNorm and SwiGLU instead of LayerNorm and GELU
};

// "bf16_autocast", "f32_rmsnorm_swiglu", ...: parameterised test names.
inline std::string DevicePrecisionName(const ::testing::TestParamInfo<DevicePrecision>& info) {
  return std::string(runtime::DTypeName(info.param.activations)) +
         (info.param.autocast ? "_autocast" : "") + (info.param.llama ? "_rmsnorm_swiglu" : "");
}

}  // namespace loom::models::testing
