// GptStages: the stages of a GPT that one pipeline rank runs, for the pipeline executor
// (parallel/pipeline/executor.h).
//
//   GptStages stages(model, schedule.placement, pp_rank, embedding_group);
//   dp = DataParallel::Create(stages.LocalParameterUnits(), ...);
//   stages.BeginStep(batch, micro_batches, loss_scale, stash_settings);
//   executor.RunStep();                      // calls Forward / BackwardInput / BackwardWeight
//   float loss = stages.MeanLoss();          // the last stage's; 0 on other ranks
//
// The model's units (GptModel::num_units: embeddings, blocks, ln_f, head) are cut into
// placement.stages() contiguous stages: the blocks spread evenly (the first L mod S stages one
// more), the embeddings with stage 0, ln_f, the LM head and the loss with the last. Only this
// rank's stages' parameters are ever materialised. The tied embedding and head: where stage 0 and
// the last stage are on different ranks each holds a copy of wte (the same initial values) whose
// gradients are summed over `embedding` (the two ranks) before data parallelism reduces them, so
// the copies stay equal; on one rank (a V placement) one weight with both uses. Checkpoints and
// exports gather the stages' parameters to pipeline rank 0 (Trainer), and a model loaded whole
// keeps only this rank's stages.
#pragma once

#include <utility>
#include <vector>

#include "absl/container/flat_hash_set.h"
#include "models/data/batch_sampler.h"
#include "models/gpt.h"
#include "parallel/pipeline/executor.h"

namespace loom::models {

class GptStages : public parallel::pipeline::StageRunner {
 public:
  // `embedding`: the group of the first and the last stage's ranks when they differ (else
  // nullptr). Not owned.
  GptStages(GptModel& model, const parallel::pipeline::Placement& placement, int rank,
            comm::Communicator* embedding);

  // Units [first, last] of stage s (inclusive; first > last for a stage without units).
  std::pair<int, int> StageUnits(int stage) const;
  // GptModel::ParameterUnits() with the units of other ranks' stages empty.
  std::vector<std::vector<parallel::Parameter*>> LocalParameterUnits();
  // Whether this rank's stages use `p` (only those are materialised: the constructor drops the
  // values of the others, e.g. loaded whole by --resume).
  bool holds(const parallel::Parameter& p) const { return local_.contains(&p); }

  // Before a step: its (this data-parallel rank's) batch, cut into `micro_batches`; the backward
  // of each starts from loss_scale / micro_batches; stashes take `settings`' dtype and autocast.
  void BeginStep(const data::Batch& batch, int micro_batches, float loss_scale,
                 const parallel::Stash& settings);
  // The mean loss over the step's micro-batches on the rank of the last stage; 0 elsewhere.
  float MeanLoss() const;

  parallel::Stash NewStash() const override { return settings_.EmptyLike(); }
  runtime::Tensor Forward(parallel::Stash& stash, int micro_batch, int stage,
                          const runtime::Tensor& input) override;
  runtime::Tensor BackwardInput(parallel::Stash& stash, int micro_batch, int stage,
                                const runtime::Tensor& dy) override;
  void BackwardWeight(parallel::Stash& stash, int micro_batch, int stage) override;
  runtime::Shape BoundaryShape() const override;

 private:
  runtime::Tensor Rows(const runtime::Tensor& t, int micro_batch) const;
  bool last(int stage) const { return stage + 1 == placement_.stages(); }

  GptModel& model_;
  parallel::pipeline::Placement placement_;
  int rank_;
  data::Batch batch_;
  int micro_batches_ = 1;
  float loss_scale_ = 1.0f;
  parallel::Stash settings_;
  double loss_sum_ = 0.0;
  absl::flat_hash_set<const parallel::Parameter*> local_;
};

}  // namespace loom::models
