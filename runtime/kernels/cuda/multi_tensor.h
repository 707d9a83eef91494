// Multi-tensor launches (as apex's multi_tensor_apply): one kernel launch updates many tensors,
// each of its blocks taking one chunk of one tensor. The launch's table (the tensors' addresses
// and sizes, and each block's tensor and chunk) travels as the kernel's argument, under the 4 KiB
// every GPU accepts, so a launch holds at most kMaxLaunchTensors tensors and kMaxLaunchChunks
// blocks; a longer list takes several launches, and a tensor's chunks may be split between two.
// Host code (C++17: the .cu files include it), tested on the host
// (tests/runtime/cuda/launch_test.cc).
//
//   for (const MultiTensorLaunch& l : PlanMultiTensorLaunches(sizes)) {
//     // slot j of the launch is tensor l.tensors[j]; block b does chunk l.chunks[b].index of
//     // slot l.chunks[b].slot: elements [index · kLaunchChunk, min(+kLaunchChunk, size))
//   }
#pragma once

#include <cstdint>
#include <utility>
#include <vector>

namespace loom::runtime::kernels::cuda {

inline constexpr int kMaxLaunchTensors = 36;
inline constexpr int kMaxLaunchChunks = 256;
inline constexpr int64_t kLaunchChunk = 65536;  // elements per block

struct MultiTensorLaunch {
  struct Chunk {
    int slot;       // the tensor's place in `tensors`
    int64_t index;  // the chunk within the tensor
  };
  std::vector<int> tensors;   // indices into the planned list, ascending
  std::vector<Chunk> chunks;  // one per block
};

// The launches for tensors of `sizes` elements (empty ones take no block), in list order.
inline std::vector<MultiTensorLaunch> PlanMultiTensorLaunches(const std::vector<int64_t>& sizes,
                                                              int64_t chunk = kLaunchChunk,
                                                              int max_tensors = kMaxLaunchTensors,
                                                              int max_chunks = kMaxLaunchChunks) {
  std::vector<MultiTensorLaunch> launches;
  MultiTensorLaunch current;
  for (size_t t = 0; t < sizes.size(); ++t) {
    const int tensor = static_cast<int>(t);
    for (int64_t c = 0; c * chunk < sizes[t]; ++c) {
      const bool new_slot = current.tensors.empty() || current.tensors.back() != tensor;
      if ((new_slot && static_cast<int>(current.tensors.size()) == max_tensors) ||
          static_cast<int>(current.chunks.size()) == max_chunks) {
        launches.push_back(std::move(current));
        current = {};
      }
      if (current.tensors.empty() || current.tensors.back() != tensor) {
        current.tensors.push_back(tensor);
      }
      current.chunks.push_back({static_cast<int>(current.tensors.size()) - 1, c});
    }
  }
  if (!current.chunks.empty()) launches.push_back(std::move(current));
  return launches;
}

}  // namespace loom::runtime::kernels::cuda
