#include "parallel/stash.h"

#include "runtime/base/check.h"

namespace loom::parallel {

void Stash::Put(const void* owner, absl::string_view slot, runtime::Tensor t) {
  tensors_[Key(owner, std::string(slot))] = std::move(t);
}

runtime::Tensor Stash::Get(const void* owner, absl::string_view slot) const {
  auto it = tensors_.find(Key(owner, std::string(slot)));
  LOOM_CHECK(it != tensors_.end()) << "Stash: no tensor '" << slot << "' for layer " << owner
                                   << " (backward without its forward?)";
  return it->second;
}

bool Stash::Contains(const void* owner, absl::string_view slot) const {
  return tensors_.contains(Key(owner, std::string(slot)));
}

void Stash::Erase(const void* owner, absl::string_view slot) {
  tensors_.erase(Key(owner, std::string(slot)));
}

int64_t Stash::bytes() const {
  int64_t total = 0;
  for (const auto& [key, t] : tensors_) total += static_cast<int64_t>(t.nbytes());
  return total;
}

}  // namespace loom::parallel
