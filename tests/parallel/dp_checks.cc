#include "tests/parallel/dp_checks.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <set>

#include "models/gpt_weights.h"

namespace loom::testing {

models::TrainOptions ReferenceOptions() {
  models::TrainOptions o;
  o.preset = "tiny";
  o.steps = 20;
  o.batch = 8;
  o.seq_len = 32;
  o.lr = 3e-3f;
  o.warmup_steps = 2;
  o.grad_clip = 1.0f;
  o.bucket_bytes = 16 << 10;
  return o;
}

models::TrainOptions WithLayout(models::TrainOptions o, int dp, int zero, int64_t grad_accum) {
  o.dp = dp;
  o.zero = zero;
  o.grad_accum = grad_accum;
  return o;
}

RunResult Train(const models::TrainOptions& o, comm::Communicator* group) {
  return Train(o, parallel::ParallelContext{.world = group, .dp = group});
}

RunResult Train(const models::TrainOptions& o, const parallel::ParallelContext& context) {
  RunResult r;
  auto trainer = models::Trainer::Create(o, context);
  EXPECT_TRUE(trainer.ok()) << trainer.status();
  if (!trainer.ok()) return r;
  models::Trainer& t = **trainer;
  while (t.step() < o.steps) {
    auto m = t.Step();
    EXPECT_TRUE(m.ok()) << m.status();
    if (!m.ok()) return r;
    r.loss_scales.push_back(m->loss_scale);
    r.skipped.push_back(m->skipped);
    if (m->skipped) continue;
    r.losses.push_back(m->loss);
    r.grad_norms.push_back(m->grad_norm);
  }
  const absl::Status gathered = t.GatherParameters();
  EXPECT_TRUE(gathered.ok()) << gathered;
  // Tensor-parallel shards gathered; a pipeline rank holds its stages' parameters only.
  auto whole = models::GptParameterTensors(t.model());
  EXPECT_TRUE(whole.ok()) << whole.status();
  if (!whole.ok()) return r;
  for (const runtime::io::NamedTensor& nt : *whole) {
    r.params[nt.name] = nt.tensor.ToF32Vector();  // host or device
  }
  return r;
}

void ExpectEquivalent(const RunResult& reference, const RunResult& got, const std::string& what,
                      const Tolerance& tolerance) {
  ASSERT_EQ(got.losses.size(), reference.losses.size()) << what;
  for (size_t s = 0; s < reference.losses.size(); ++s) {
    EXPECT_NEAR(got.losses[s], reference.losses[s], tolerance.loss) << what << " step " << s + 1;
    EXPECT_NEAR(got.grad_norms[s], reference.grad_norms[s],
                tolerance.grad_norm * reference.grad_norms[s])
        << what << " grad norm, step " << s + 1;
  }
  ASSERT_EQ(got.params.size(), reference.params.size()) << what;
  double worst = 0.0;
  std::string worst_name;
  for (const auto& [name, want] : reference.params) {
    const auto it = got.params.find(name);
    ASSERT_NE(it, got.params.end()) << what << ": no parameter " << name;
    ASSERT_EQ(it->second.size(), want.size()) << what << " " << name;
    for (size_t i = 0; i < want.size(); ++i) {
      const double d = std::abs(static_cast<double>(it->second[i]) - want[i]);
      if (!(d <= worst)) {  // also catches NaN
        worst = std::isnan(d) ? INFINITY : d;
        worst_name = name + "[" + std::to_string(i) + "]";
      }
    }
  }
  EXPECT_LE(worst, tolerance.param) << what << ": largest parameter difference at " << worst_name;
}

std::vector<RunResult> TrainOnMesh(const models::TrainOptions& o) {
  std::vector<RunResult> results(o.dp * o.tp * o.pp * o.ep);
  OnMesh(o, [&](int rank, const parallel::ParallelContext& ctx) { results[rank] = Train(o, ctx); });
  return results;
}

void TrainAndSaveOnMesh(const models::TrainOptions& o, int64_t steps) {
  OnMesh(o, [&](int, const parallel::ParallelContext& ctx) {
    auto t = models::Trainer::Create(o, ctx);
    ASSERT_TRUE(t.ok()) << t.status();
    for (int64_t s = 0; s < steps; ++s) ASSERT_TRUE((*t)->Step().ok());
    const absl::Status saved = (*t)->SaveCheckpoint();
    ASSERT_TRUE(saved.ok()) << saved;
  });
}

void ExpectEquivalentWhereHeld(const RunResult& reference, const RunResult& got,
                               const std::string& what, const Tolerance& tolerance) {
  RunResult want = reference;
  for (auto it = want.params.begin(); it != want.params.end();) {
    it = got.params.contains(it->first) ? std::next(it) : want.params.erase(it);
  }
  ExpectEquivalent(want, got, what, tolerance);
}

void ExpectEquivalentOnRanks(const RunResult& reference, const std::vector<RunResult>& ranks,
                             const std::string& what, const Tolerance& tolerance) {
  std::set<std::string> held;
  for (size_t r = 0; r < ranks.size(); ++r) {
    for (const auto& [name, values] : ranks[r].params) held.insert(name);
    ExpectEquivalentWhereHeld(reference, ranks[r], what + " rank " + std::to_string(r), tolerance);
  }
  EXPECT_EQ(held.size(), reference.params.size()) << what << ": parameters nobody holds";
}

}  // namespace loom::testing
