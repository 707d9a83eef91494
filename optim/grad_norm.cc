#include "optim/grad_norm.h"

#include <cmath>

#include "runtime/kernels/elementwise.h"

namespace loom::optim {

double GlobalGradNorm(const std::vector<runtime::Tensor>& grads) {
  double sum = 0.0;
  for (const runtime::Tensor& g : grads) sum += runtime::kernels::SumOfSquares(g);
  return std::sqrt(sum);
}

double ClipGradNorm(const std::vector<runtime::Tensor>& grads, double max_norm) {
  const double norm = GlobalGradNorm(grads);
  if (max_norm > 0.0 && std::isfinite(norm) && norm > max_norm) {
    const float factor = static_cast<float>(max_norm / norm);
    for (runtime::Tensor g : grads) runtime::kernels::Scale(g, factor);
  }
  return norm;
}

}  // namespace loom::optim
