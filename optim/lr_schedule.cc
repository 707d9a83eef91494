#include "optim/lr_schedule.h"

#include <algorithm>
#include <cmath>

#include "absl/strings/str_cat.h"

namespace loom::optim {

absl::Status CosineSchedule::Validate() const {
  const CosineScheduleOptions& o = options_;
  if (!(o.max_lr > 0.0f)) {
    return absl::InvalidArgumentError(
        absl::StrCat("learning rate must be positive, got ", o.max_lr));
  }
  if (o.min_lr < 0.0f || o.min_lr > o.max_lr) {
    return absl::InvalidArgumentError(
        absl::StrCat("min learning rate ", o.min_lr, " must lie in [0, ", o.max_lr, "]"));
  }
  if (o.warmup_steps < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("warmup steps must be >= 0, got ", o.warmup_steps));
  }
  if (o.total_steps < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("total steps must be >= 1, got ", o.total_steps));
  }
  return absl::OkStatus();
}

float CosineSchedule::At(int64_t step) const {
  const CosineScheduleOptions& o = options_;
  if (step < o.warmup_steps) {
    return o.max_lr * static_cast<float>(step + 1) / static_cast<float>(o.warmup_steps);
  }
  const int64_t decay_steps = std::max<int64_t>(1, o.total_steps - o.warmup_steps);
  const double progress =
      std::clamp(static_cast<double>(step - o.warmup_steps) / decay_steps, 0.0, 1.0);
  return static_cast<float>(o.min_lr +
                            0.5 * (o.max_lr - o.min_lr) * (1.0 + std::cos(M_PI * progress)));
}

}  // namespace loom::optim
