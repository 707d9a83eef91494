#include "optim/loss_scaler.h"

#include <algorithm>

namespace loom::optim {

bool DynamicLossScaler::Update(bool gradients_finite) {
  if (!gradients_finite) {
    scale_ = std::max(options_.min_scale, scale_ * options_.backoff_factor);
    clean_steps_ = 0;
    ++skipped_steps_;
    return false;
  }
  if (++clean_steps_ >= options_.growth_interval) {
    scale_ *= options_.growth_factor;
    clean_steps_ = 0;
  }
  return true;
}

}  // namespace loom::optim
