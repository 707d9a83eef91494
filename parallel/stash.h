// Stash: the activations one micro-batch's backward needs, keyed by layer and slot.
//
//   Stash stash;                              // one per micro-batch in flight
//   Tensor y = block.Forward(stash, x);       // layers Put what their backward reads
//   Tensor dx = block.BackwardInput(stash, dy);
//   block.BackwardWeight(stash);              // may run later (zero-bubble schedules)
//   stash.Clear();
//
// A pipeline holds several stashes at once; a layer that recomputes keeps only its input here.
#pragma once

#include <cstdint>
#include <string>
#include <utility>

#include "absl/container/flat_hash_map.h"
#include "absl/strings/string_view.h"
#include "runtime/tensor.h"

namespace loom::parallel {

class Stash {
 public:
  // Stores `t` (shallow: shares storage) under (owner, slot), replacing any previous tensor.
  void Put(const void* owner, absl::string_view slot, runtime::Tensor t);
  // The tensor under (owner, slot) (a shallow copy: later Puts cannot invalidate it); aborts naming
  // the slot if it is missing (a backward without its forward is a programmer error).
  runtime::Tensor Get(const void* owner, absl::string_view slot) const;
  bool Contains(const void* owner, absl::string_view slot) const;
  void Erase(const void* owner, absl::string_view slot);
  void Clear() { tensors_.clear(); }

  int64_t size() const { return static_cast<int64_t>(tensors_.size()); }
  // Bytes of the stashed tensors (views count their own size).
  int64_t bytes() const;

 private:
  using Key = std::pair<const void*, std::string>;
  absl::flat_hash_map<Key, runtime::Tensor> tensors_;
};

}  // namespace loom::parallel
