#include "parallel/stash.h"

#include "absl/container/flat_hash_set.h"
#include "runtime/base/check.h"
#include "runtime/dtype.h"
#include "runtime/kernels/elementwise.h"

namespace loom::parallel {

Stash Stash::EmptyLike() const {
  Stash s;
  s.activation_dtype_ = activation_dtype_;
  s.autocast_ = autocast_;
  s.sequence_length_ = sequence_length_;
  s.loss_grad_scale_ = loss_grad_scale_;
  return s;
}

void Stash::Put(const void* owner, absl::string_view slot, runtime::Tensor t) {
  if (activation_dtype_ == runtime::DType::kF32 || !t.defined() ||
      t.dtype() != runtime::DType::kF32) {
    PutExact(owner, slot, std::move(t));
    return;
  }
  runtime::Tensor narrow =
      runtime::Tensor::Empty(t.shape(), activation_dtype_, runtime::MemoryTag::kActivation);
  runtime::kernels::Convert(t, narrow);
  tensors_[Key(owner, std::string(slot))] = Entry{std::move(narrow), /*widen=*/true};
}

void Stash::PutExact(const void* owner, absl::string_view slot, runtime::Tensor t) {
  tensors_[Key(owner, std::string(slot))] = Entry{std::move(t), /*widen=*/false};
}

const Stash::Entry& Stash::Find(const void* owner, absl::string_view slot) const {
  auto it = tensors_.find(Key(owner, std::string(slot)));
  LOOM_CHECK(it != tensors_.end()) << "Stash: no tensor '" << slot << "' for layer " << owner
                                   << " (backward without its forward?)";
  return it->second;
}

runtime::Tensor Stash::GetForGemm(const void* owner, absl::string_view slot) const {
  const Entry& e = Find(owner, slot);
  return e.tensor.dtype() == GemmDType() ? e.tensor : WidenedIfNarrowed(e);
}

runtime::Tensor Stash::GetBf16OrF32(const void* owner, absl::string_view slot) const {
  const Entry& e = Find(owner, slot);
  return e.tensor.dtype() == runtime::DType::kBF16 ? e.tensor : WidenedIfNarrowed(e);
}

runtime::Tensor Stash::ForwardGemmInput(const void* owner, absl::string_view slot,
                                        const runtime::Tensor& x) const {
  return ForwardGemmDType() == runtime::DType::kF32 ? x : GetForGemm(owner, slot);
}

runtime::Tensor Stash::Get(const void* owner, absl::string_view slot) const {
  return WidenedIfNarrowed(Find(owner, slot));
}

runtime::Tensor Stash::WidenedIfNarrowed(const Entry& e) {
  if (!e.widen) return e.tensor;
  runtime::Tensor wide = runtime::Tensor::Empty(e.tensor.shape(), runtime::DType::kF32,
                                                runtime::MemoryTag::kActivation);
  runtime::kernels::Convert(e.tensor, wide);
  return wide;
}

bool Stash::Contains(const void* owner, absl::string_view slot) const {
  return tensors_.contains(Key(owner, std::string(slot)));
}

void Stash::Erase(const void* owner, absl::string_view slot) {
  tensors_.erase(Key(owner, std::string(slot)));
}

int64_t Stash::bytes() const {
  int64_t total = 0;
  for (const auto& [key, e] : tensors_) total += static_cast<int64_t>(e.tensor.nbytes());
  return total;
}

int64_t Stash::activation_bytes() const {
  absl::flat_hash_set<const runtime::Storage*> seen;
  int64_t total = 0;
  for (const auto& [key, e] : tensors_) {
    const runtime::Storage* storage = e.tensor.storage();
    if (e.tensor.tag() == runtime::MemoryTag::kActivation && seen.insert(storage).second) {
      total += static_cast<int64_t>(storage->bytes());
    }
  }
  return total;
}

}  // namespace loom::parallel
