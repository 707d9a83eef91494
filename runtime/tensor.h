// Tensor: a typed, shaped, contiguous row-major view of reference-counted storage.
//
//   Tensor x = Tensor::Empty({B, T, C}, DType::kF32, MemoryTag::kActivation);
//   float* p = x.data<float>();                 // checked against the dtype
//   Tensor rows = x.Reshape({B * T, C}).Slice(0, 16);   // views share storage
//   Tensor w = Tensor::FromVector({2, 2}, std::vector<float>{1, 2, 3, 4}, MemoryTag::kParam);
//
// Copies of a Tensor are shallow (they share storage). Views exist only along dim 0 (Slice) and by
// reshape, so every tensor is contiguous. A tensor lives where its allocator's memory does: the
// host (Device::kCpu, the default), or a CUDA device (runtime/kernels/cuda/device.h's
// DeviceAllocator; host code cannot read it: data() refuses, device_data() is for CUDA code).
#pragma once

#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "absl/strings/string_view.h"
#include "runtime/allocator.h"
#include "runtime/base/check.h"
#include "runtime/dtype.h"

namespace loom::runtime {

absl::string_view DeviceName(Device device);

using Shape = std::vector<int64_t>;
std::string ShapeToString(const Shape& shape);  // "[4, 7]"
int64_t NumElements(const Shape& shape);

// Owns one allocation and returns it to its allocator when the last tensor using it goes away.
class Storage {
 public:
  Storage(size_t bytes, MemoryTag tag, Allocator* allocator);
  ~Storage();
  Storage(const Storage&) = delete;
  Storage& operator=(const Storage&) = delete;

  void* data() const { return data_; }
  size_t bytes() const { return bytes_; }
  MemoryTag tag() const { return tag_; }
  Allocator* allocator() const { return allocator_; }
  // Queued work (a device stream's) uses this memory until `done` says otherwise: when the last
  // tensor goes, the allocator reuses it only after every recorded use (Allocator::FreeAfter).
  void RecordUse(BlockCache::Fence done);

 private:
  void* data_;
  size_t bytes_;
  MemoryTag tag_;
  Allocator* allocator_;
  std::mutex mu_;  // RecordUse from several threads
  std::vector<BlockCache::Fence> uses_;
};

class Tensor {
 public:
  Tensor() = default;  // undefined: defined() is false

  // Uninitialised tensor. `allocator` defaults to Allocator::Current() (the host's unless an
  // AllocatorScope says otherwise); the tensor is on its device.
  static Tensor Empty(const Shape& shape, DType dtype, MemoryTag tag,
                      Allocator* allocator = nullptr);
  static Tensor Zeros(const Shape& shape, DType dtype, MemoryTag tag,
                      Allocator* allocator = nullptr);
  // f32 / i32 / i64 tensor holding `values` (their count must equal the shape's element count).
  template <typename T>
  static Tensor FromVector(const Shape& shape, const std::vector<T>& values, MemoryTag tag,
                           Allocator* allocator = nullptr);

  bool defined() const { return storage_ != nullptr; }
  const Shape& shape() const { return shape_; }
  int rank() const { return static_cast<int>(shape_.size()); }
  // Size of dimension i; negative i counts from the end.
  int64_t dim(int i) const;
  int64_t numel() const { return numel_; }
  DType dtype() const { return dtype_; }
  Device device() const { return device_; }
  MemoryTag tag() const { return tag_; }
  size_t nbytes() const { return static_cast<size_t>(numel_) * DTypeSize(dtype_); }
  // The allocation this tensor views (shared by its copies and views; null when undefined).
  const Storage* storage() const { return storage_.get(); }

  // Typed pointer to the first element; aborts if T does not match dtype(). Host tensors only.
  template <typename T>
  T* data() const {
    LOOM_CHECK(DTypeOf<T>::value == dtype_)
        << "Tensor::data<" << DTypeName(DTypeOf<T>::value) << ">() on a " << DebugString();
    return static_cast<T*>(raw_data());
  }
  // The first element's address; aborts for a device tensor (host code cannot read it).
  void* raw_data() const;
  // The first element's device address, for CUDA code; aborts for a host tensor.
  void* device_data() const;
  // Queued work uses this tensor's storage until `done` returns true (a device stream's event:
  // cuda::RecordUse); its memory is reused only after that, whenever the last tensor goes.
  void RecordUse(BlockCache::Fence done) const;

  // Rows [begin, end) along dim 0, sharing storage.
  Tensor Slice(int64_t begin, int64_t end) const;
  // Same storage, new shape with the same element count; one dimension may be -1 (inferred).
  Tensor Reshape(const Shape& shape) const;
  // The same bytes seen as `dtype` in `shape` (as torch's Tensor.view(dtype)): the byte sizes must
  // match, and the start must be aligned for `dtype`. E.g. FP8 rows sent through a collective as
  // i32 words.
  Tensor ViewAs(DType dtype, const Shape& shape) const;
  // A deep copy with its own storage from `allocator` (default Allocator::Current()), same tag;
  // host or device on either side.
  Tensor Clone(Allocator* allocator = nullptr) const;
  // Where to make a tensor that belongs beside this one: its device's allocator, or the host's
  // default for a host tensor (never a communicator's arena, where a host tensor may lie),
  // whatever an AllocatorScope says. E.g. Clone(t.Beside()), optimizer state for a parameter.
  Allocator* Beside() const;
  // Copies `src`'s elements into this tensor (same shape and dtype; host or device on either
  // side); synchronous.
  void CopyFrom(const Tensor& src);
  // Elements as f32 (floating dtypes only); handy for tests and logging. Device tensors are
  // copied to the host first.
  std::vector<float> ToF32Vector() const;
  // Writes `value` (converted to dtype()) to every element, on the host or the device.
  void Fill(float value);

  std::string DebugString() const;  // "f32[4, 7]"

 private:
  std::shared_ptr<Storage> storage_;
  size_t offset_bytes_ = 0;
  Shape shape_;
  int64_t numel_ = 0;
  DType dtype_ = DType::kF32;
  Device device_ = Device::kCpu;
  MemoryTag tag_ = MemoryTag::kWorkspace;
};

template <typename T>
Tensor Tensor::FromVector(const Shape& shape, const std::vector<T>& values, MemoryTag tag,
                          Allocator* allocator) {
  Tensor t = Empty(shape, DTypeOf<T>::value, tag, allocator);
  LOOM_CHECK_EQ(static_cast<int64_t>(values.size()), t.numel())
      << "Tensor::FromVector: values do not fill shape " << ShapeToString(shape);
  std::copy(values.begin(), values.end(), t.data<T>());
  return t;
}

}  // namespace loom::runtime
