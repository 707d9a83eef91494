// Dynamic loss scaling for f16 training: the loss is multiplied by scale() before backward so
// small gradients survive f16; a step whose gradients overflowed is skipped and the scale halved;
// after `growth_interval` clean steps in a row the scale doubles.
//
//   DynamicLossScaler scaler;                        // 2^16, x2 after 2000 clean steps, x0.5
//   model.Backward(stash, scaler.scale());
//   bool finite = ...;                               // agreed by every data-parallel rank
//   if (scaler.Update(finite)) {                     // false: skip this step
//     ScaleGradients(1.0f / scale_used);  optimizer.Step(...);
//   }
//
// The decision must be the same on every rank: pass the result of an all-reduced check
// (DataParallel::GradientsFinite), never a rank-local one.
#pragma once

#include <cstdint>

namespace loom::optim {

class DynamicLossScaler {
 public:
  struct Options {
    float initial_scale = 65536.0f;  // 2^16
    int64_t growth_interval = 2000;  // clean steps in a row before the scale doubles
    float growth_factor = 2.0f;
    float backoff_factor = 0.5f;
    float min_scale = 1.0f;  // never below (a run that overflows at scale 1 has other problems)
  };
  DynamicLossScaler() : DynamicLossScaler(Options{}) {}
  explicit DynamicLossScaler(Options options) : options_(options), scale_(options.initial_scale) {}

  float scale() const { return scale_; }
  // Clean steps since the last overflow or growth.
  int64_t clean_steps() const { return clean_steps_; }
  int64_t skipped_steps() const { return skipped_steps_; }

  // Records the outcome of a step's backward. Returns true when the step should be applied; on an
  // overflow returns false, multiplies the scale by backoff_factor and restarts the count.
  bool Update(bool gradients_finite);
  // Restores what scale() and clean_steps() returned (from a checkpoint).
  void Restore(float scale, int64_t clean_steps) {
    scale_ = scale;
    clean_steps_ = clean_steps;
  }

 private:
  Options options_;
  float scale_;
  int64_t clean_steps_ = 0;
  int64_t skipped_steps_ = 0;
};

}  // namespace loom::optim
