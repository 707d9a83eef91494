#include "models/gpt_stages.h"

#include "parallel/shard.h"
#include "runtime/base/check.h"

namespace loom::models {

using parallel::Parameter;
using runtime::Tensor;

GptStages::GptStages(GptModel& model, const parallel::pipeline::Placement& placement, int rank,
                     comm::Communicator* embedding)
    : model_(model), placement_(placement), rank_(rank) {
  const int stages = placement.stages();
  const bool first_here = placement.rank_of(0) == rank,
             last_here = placement.rank_of(stages - 1) == rank;
  Parameter* wte = model.FindParameter("wte.weight");
  if (first_here != last_here) {
    wte->SetUses(1);  // this rank runs only the embedding or only the head
    LOOM_CHECK(embedding != nullptr) << "GptStages: the tied embedding's copies need a group";
    wte->AddGradPartialOver("embedding");
  }
  // Weights loaded whole (--resume, --init_from) are dropped where another rank runs them.
  for (const auto& unit : LocalParameterUnits()) local_.insert(unit.begin(), unit.end());
  for (Parameter* p : model.Parameters()) {
    if (!holds(*p) && p->value().defined()) p->BindValue(Tensor());
  }
}

std::pair<int, int> GptStages::StageUnits(int stage) const {
  const int stages = placement_.stages();
  const int blocks = model_.num_units() - 3;
  const auto [b, e] = parallel::BalancedRange(blocks, stage, stages);
  // Blocks b..e-1 are units 1 + b .. e; stage 0 adds unit 0, the last adds ln_f and the head.
  const int first = stage == 0 ? 0 : 1 + static_cast<int>(b);
  const int last_unit = stage + 1 == stages ? model_.num_units() - 1 : static_cast<int>(e);
  return {first, last_unit};
}

std::vector<std::vector<Parameter*>> GptStages::LocalParameterUnits() {
  std::vector<std::vector<Parameter*>> units = model_.ParameterUnits();
  std::vector<bool> local(units.size(), false);
  for (int c = 0; c < placement_.chunks; ++c) {
    const auto [first, last_unit] = StageUnits(placement_.stage_of(rank_, c));
    for (int u = first; u <= last_unit; ++u) local[u] = true;
  }
  for (size_t u = 0; u < units.size(); ++u) {
    if (!local[u]) units[u].clear();
  }
  return units;
}

void GptStages::BeginStep(const data::Batch& batch, int micro_batches, float loss_scale,
                          const parallel::Stash& settings) {
  LOOM_CHECK(micro_batches >= 1 && batch.inputs.dim(0) % micro_batches == 0)
      << "GptStages: " << batch.inputs.dim(0) << " sequences do not cut into " << micro_batches
      << " micro-batches";
  batch_ = batch;
  micro_batches_ = micro_batches;
  loss_scale_ = loss_scale;
  settings_ = settings.EmptyLike();
  settings_.SetLossGradScale(loss_scale / micro_batches);  // every stage's layers' own losses
  loss_sum_ = 0.0;
}

float GptStages::MeanLoss() const {
  const bool last_here = placement_.rank_of(placement_.stages() - 1) == rank_;
  return last_here ? static_cast<float>(loss_sum_ / micro_batches_) : 0.0f;
}

// The micro-batch's own copy of its rows (token ids or targets, which the embedding and the loss
// stash): a view would tie each stash to the whole batch's allocation (held for the step anyway),
// and Stash::activation_bytes would not be what the stash adds.
Tensor GptStages::Rows(const Tensor& t, int micro_batch) const {
  const int64_t n = t.dim(0) / micro_batches_;
  return t.Slice(micro_batch * n, (micro_batch + 1) * n).Clone(t.Beside());
}

runtime::Shape GptStages::BoundaryShape() const {
  const int64_t rows = batch_.inputs.dim(0) / micro_batches_, t = batch_.inputs.dim(1);
  if (!model_.sequence_parallel()) return {rows, t, model_.config().dim};
  return {rows * t / model_.tp()->size(), model_.config().dim};  // this rank's token rows
}

Tensor GptStages::Forward(parallel::Stash& stash, int micro_batch, int stage, const Tensor& input) {
  const Tensor ids = Rows(batch_.inputs, micro_batch);
  model_.BeginMicroBatch(stash, ids);
  const auto [first, last_unit] = StageUnits(stage);
  Tensor x = stage == 0 ? ids : input;
  for (int u = first; u <= last_unit; ++u) x = model_.UnitForward(stash, u, x);
  if (!last(stage)) return x;
  loss_sum_ += model_.Loss(stash, x, Rows(batch_.targets, micro_batch));
  return Tensor();
}

Tensor GptStages::BackwardInput(parallel::Stash& stash, int /*micro_batch*/, int stage,
                                const Tensor& dy) {
  Tensor d = last(stage) ? model_.LossBackward(stash, loss_scale_ / micro_batches_) : dy;
  const auto [first, last_unit] = StageUnits(stage);
  for (int u = last_unit; u >= first; --u) d = model_.UnitBackwardInput(stash, u, d);
  return stage == 0 ? Tensor() : d;
}

void GptStages::BackwardWeight(parallel::Stash& stash, int /*micro_batch*/, int stage) {
  const auto [first, last_unit] = StageUnits(stage);
  for (int u = last_unit; u >= first; --u) model_.UnitBackwardWeight(stash, u);
}

}  // namespace loom::models
