#include "optim/grad_norm.h"

#include <cmath>

#include "runtime/kernels/elementwise.h"

namespace loom::optim {

double GlobalGradNorm(const std::vector<runtime::Tensor>& grads) {
  double sum = 0.0;
  for (double s : runtime::kernels::SumsOfSquares(grads)) sum += s;
  return std::sqrt(sum);
}

double ClipGradNorm(const std::vector<runtime::Tensor>& grads, double max_norm) {
  const double norm = GlobalGradNorm(grads);
  const double factor = ClipFactor(norm, max_norm);
  if (factor != 1.0) {
    for (runtime::Tensor g : grads) runtime::kernels::Scale(g, static_cast<float>(factor));
  }
  return norm;
}

double ClipFactor(double norm, double max_norm) {
  return max_norm > 0.0 && std::isfinite(norm) && norm > max_norm ? max_norm / norm : 1.0;
}

}  // namespace loom::optim
