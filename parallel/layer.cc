#include "parallel/layer.h"

namespace loom::parallel {

std::vector<Parameter*> ConcatParameters(std::initializer_list<Layer*> layers) {
  std::vector<Parameter*> out;
  for (Layer* layer : layers) {
    for (Parameter* p : layer->Parameters()) out.push_back(p);
  }
  return out;
}

}  // namespace loom::parallel
