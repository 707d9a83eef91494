// Learning-rate schedule: linear warmup then cosine decay to a floor (GPT-2 / llm.c style).
//
//   CosineSchedule lr({.max_lr = 6e-4f, .min_lr = 6e-5f, .warmup_steps = 100,
//                      .total_steps = 5000});
//   float rate = lr.At(step);      // step counts from 0
//
// At(step) = max_lr·(step+1)/warmup for step < warmup; then min_lr + ½(max_lr − min_lr)(1 +
// cos(π·progress)) with progress = (step − warmup)/(total − warmup) clamped to [0, 1].
#pragma once

#include <cstdint>

#include "absl/status/status.h"

namespace loom::optim {

struct CosineScheduleOptions {
  float max_lr = 6e-4f;
  float min_lr = 0.0f;
  int64_t warmup_steps = 0;
  int64_t total_steps = 1;
};

class CosineSchedule {
 public:
  explicit CosineSchedule(CosineScheduleOptions options) : options_(options) {}
  // InvalidArgument naming the field: negative rates, min > max, warmup < 0, total < 1.
  absl::Status Validate() const;
  float At(int64_t step) const;
  const CosineScheduleOptions& options() const { return options_; }

 private:
  CosineScheduleOptions options_;
};

}  // namespace loom::optim
