// Optimizers on local parameter shards: AdamW (decoupled weight decay, f32 master weights) and
// SGD with momentum. They see flat (name, param, grad) slots, so the same code serves a whole
// parameter, a ZeRO shard or an expert's weights.
//
//   AdamW adamw({.beta1 = 0.9f, .beta2 = 0.95f, .eps = 1e-8f, .weight_decay = 0.1f});
//   std::vector<ParamSlot> slots = {{"h.0.mlp.c_fc.weight", w, dw, /*decay=*/true}, ...};
//   adamw.Step(slots, /*lr=*/6e-4f);          // updates w in place, step() becomes 1
//   std::vector<NamedTensor> state = adamw.State();   // moments, for checkpoints
//
// Weight decay applies only to slots with decay = true (matrices and embeddings, as GPT-2
// training does). f32; state lives beside each parameter (host or device memory).
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "runtime/io/safetensors.h"
#include "runtime/kernels/adamw.h"
#include "runtime/tensor.h"

namespace loom::optim {

struct ParamSlot {
  std::string name;
  runtime::Tensor param;  // f32, updated in place
  runtime::Tensor grad;   // f32, same element count
  bool decay = false;
};

// Optimizer state tensors are named "<param name>.exp_avg", "<param name>.exp_avg_sq" (AdamW) or
// "<param name>.momentum_buffer" (SGD), as torch.optim names them, for checkpoints.
using runtime::io::NamedTensor;

class Optimizer {
 public:
  virtual ~Optimizer() = default;
  // Applies one update with learning rate `lr` to every slot. Slots must keep their names and
  // sizes from step to step (state is created on first sight of a name).
  virtual void Step(const std::vector<ParamSlot>& slots, float lr) = 0;
  int64_t step() const { return step_; }
  // State tensors (shared, not copies) and the step count, for checkpoints.
  virtual std::vector<NamedTensor> State() const = 0;
  // Replaces all state with copies of what State() returned; InvalidArgument naming the tensor on
  // a malformed entry. A later Step aborts if a slot has no restored state (never silently fresh).
  virtual absl::Status LoadState(const std::vector<NamedTensor>& state, int64_t step) = 0;
  // The suffixes of this optimizer's state names (".exp_avg", ...), one tensor each per slot.
  virtual std::vector<std::string> StateSuffixes() const = 0;

 protected:
  int64_t step_ = 0;
};

struct AdamWOptions {
  float beta1 = 0.9f;
  float beta2 = 0.95f;
  float eps = 1e-8f;
  float weight_decay = 0.1f;
};

class AdamW : public Optimizer {
 public:
  explicit AdamW(AdamWOptions options) : options_(options) {}
  void Step(const std::vector<ParamSlot>& slots, float lr) override;
  std::vector<NamedTensor> State() const override;
  absl::Status LoadState(const std::vector<NamedTensor>& state, int64_t step) override;
  std::vector<std::string> StateSuffixes() const override { return {".exp_avg", ".exp_avg_sq"}; }

 private:
  struct Moments {
    runtime::Tensor m, v;
  };
  Moments& MomentsFor(const ParamSlot& slot);

  AdamWOptions options_;
  std::map<std::string, Moments> moments_;
};

struct SgdOptions {
  float momentum = 0.9f;
  float weight_decay = 0.0f;  // added to the gradient (L2), decay slots only
};

// torch.optim.SGD semantics: buf = momentum·buf + g (buf = g on the first step); p -= lr·buf.
class Sgd : public Optimizer {
 public:
  explicit Sgd(SgdOptions options) : options_(options) {}
  void Step(const std::vector<ParamSlot>& slots, float lr) override;
  std::vector<NamedTensor> State() const override;
  absl::Status LoadState(const std::vector<NamedTensor>& state, int64_t step) override;
  std::vector<std::string> StateSuffixes() const override { return {".momentum_buffer"}; }

 private:
  SgdOptions options_;
  std::map<std::string, runtime::Tensor> momentum_;
};

}  // namespace loom::optim
