#include "runtime/tensor.h"

#include <cstring>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "runtime/parallel.h"

namespace loom::runtime {

absl::string_view DeviceName(Device device) { return device == Device::kCpu ? "cpu" : "cuda"; }

std::string ShapeToString(const Shape& shape) {
  return absl::StrCat("[", absl::StrJoin(shape, ", "), "]");
}

int64_t NumElements(const Shape& shape) {
  int64_t n = 1;
  for (int64_t d : shape) {
    LOOM_CHECK_GE(d, 0) << "negative dimension in shape " << ShapeToString(shape);
    n *= d;
  }
  return n;
}

Storage::Storage(size_t bytes, MemoryTag tag, Allocator* allocator)
    : data_(allocator->Allocate(bytes, tag)), bytes_(bytes), tag_(tag), allocator_(allocator) {}

Storage::~Storage() {
  if (uses_.empty()) {
    allocator_->Free(data_, bytes_, tag_);
  } else {
    allocator_->FreeAfter(data_, bytes_, tag_, std::move(uses_));
  }
}

void Storage::RecordUse(BlockCache::Fence done) {
  std::lock_guard<std::mutex> lock(mu_);
  uses_.push_back(std::move(done));
}

Tensor Tensor::Empty(const Shape& shape, DType dtype, MemoryTag tag, Allocator* allocator) {
  Tensor t;
  t.shape_ = shape;
  t.numel_ = NumElements(shape);
  t.dtype_ = dtype;
  t.tag_ = tag;
  Allocator* from = allocator != nullptr ? allocator : &Allocator::Current();
  t.device_ = from->device();
  t.storage_ = std::make_shared<Storage>(t.nbytes(), tag, from);
  return t;
}

Tensor Tensor::Zeros(const Shape& shape, DType dtype, MemoryTag tag, Allocator* allocator) {
  Tensor t = Empty(shape, dtype, tag, allocator);
  const MemorySource& source = t.storage_->allocator()->source();
  if (source.set != nullptr) {
    if (t.nbytes() > 0) source.set(t.storage_->data(), 0, t.nbytes());
    return t;
  }
  // Backward allocates a zeroed gradient per layer: split large ones across loom's threads, so
  // the memset does not run serially while the other threads wait.
  char* p = static_cast<char*>(t.raw_data());
  ParallelFor(static_cast<int64_t>(t.nbytes()), int64_t{1} << 20, [p](int64_t begin, int64_t end) {
    std::memset(p + begin, 0, static_cast<size_t>(end - begin));
  });
  return t;
}

int64_t Tensor::dim(int i) const {
  const int r = rank();
  const int j = i < 0 ? i + r : i;
  LOOM_CHECK(j >= 0 && j < r) << "dimension " << i << " out of range for " << DebugString();
  return shape_[j];
}

namespace {

void* Address(const std::shared_ptr<Storage>& storage, size_t offset_bytes) {
  if (storage == nullptr || storage->data() == nullptr) return nullptr;
  return static_cast<char*>(storage->data()) + offset_bytes;
}

}  // namespace

void* Tensor::raw_data() const {
  LOOM_CHECK(device_ == Device::kCpu)
      << "host code read a " << DebugString()
      << ": device memory is not addressable from the host (copy it to the host first)";
  return Address(storage_, offset_bytes_);
}

void* Tensor::device_data() const {
  LOOM_CHECK(device_ != Device::kCpu) << "device_data() of a host tensor " << DebugString();
  return Address(storage_, offset_bytes_);
}

void Tensor::RecordUse(BlockCache::Fence done) const {
  LOOM_CHECK(defined()) << "RecordUse on an undefined tensor";
  storage_->RecordUse(std::move(done));
}

Tensor Tensor::Slice(int64_t begin, int64_t end) const {
  LOOM_CHECK_GE(rank(), 1) << "Tensor::Slice on a scalar " << DebugString();
  LOOM_CHECK(0 <= begin && begin <= end && end <= shape_[0])
      << "Tensor::Slice [" << begin << ", " << end << ") out of range for " << DebugString();
  Tensor t = *this;
  const int64_t row = shape_[0] == 0 ? 0 : numel_ / shape_[0];
  t.shape_[0] = end - begin;
  t.numel_ = row * (end - begin);
  t.offset_bytes_ = offset_bytes_ + static_cast<size_t>(begin * row) * DTypeSize(dtype_);
  return t;
}

Tensor Tensor::Reshape(const Shape& shape) const {
  Shape s = shape;
  int infer = -1;
  int64_t known = 1;
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] == -1) {
      LOOM_CHECK_EQ(infer, -1) << "Tensor::Reshape: more than one -1 in " << ShapeToString(shape);
      infer = static_cast<int>(i);
    } else {
      known *= s[i];
    }
  }
  if (infer >= 0) {
    LOOM_CHECK(known > 0 && numel_ % known == 0)
        << "Tensor::Reshape: cannot infer -1 in " << ShapeToString(shape) << " for "
        << DebugString();
    s[infer] = numel_ / known;
  }
  LOOM_CHECK_EQ(NumElements(s), numel_)
      << "Tensor::Reshape: " << DebugString() << " to " << ShapeToString(shape);
  Tensor t = *this;
  t.shape_ = std::move(s);
  return t;
}

Tensor Tensor::ViewAs(DType dtype, const Shape& shape) const {
  const size_t bytes = static_cast<size_t>(NumElements(shape)) * DTypeSize(dtype);
  LOOM_CHECK_EQ(bytes, nbytes()) << "Tensor::ViewAs: " << DebugString() << " as "
                                 << DTypeName(dtype) << ShapeToString(shape);
  LOOM_CHECK_EQ(offset_bytes_ % DTypeSize(dtype), 0u)
      << "Tensor::ViewAs: " << DebugString() << " starts unaligned for " << DTypeName(dtype);
  Tensor t = *this;
  t.dtype_ = dtype;
  t.shape_ = shape;
  t.numel_ = NumElements(shape);
  return t;
}

Allocator* Tensor::Beside() const {
  return device_ == Device::kCpu || storage_ == nullptr ? &Allocator::Default()
                                                        : storage_->allocator();
}

Tensor Tensor::Clone(Allocator* allocator) const {
  Tensor t = Empty(shape_, dtype_, tag_, allocator);
  t.CopyFrom(*this);
  return t;
}

namespace {

// The copy function for moving bytes between `a`'s and `b`'s memory: a device source's if either
// is on one (it handles both directions), else nullptr (memcpy).
using CopyFn = void (*)(void* dst, const void* src, size_t bytes);
CopyFn CopyBetween(const Storage* a, const Storage* b) {
  for (const Storage* s : {a, b}) {
    if (s != nullptr && s->allocator()->source().copy != nullptr) {
      return s->allocator()->source().copy;
    }
  }
  return nullptr;
}

}  // namespace

void Tensor::CopyFrom(const Tensor& src) {
  LOOM_CHECK(src.shape_ == shape_ && src.dtype_ == dtype_)
      << "Tensor::CopyFrom: " << src.DebugString() << " into " << DebugString();
  if (nbytes() == 0) return;
  void* dst = static_cast<char*>(storage_->data()) + offset_bytes_;
  const void* from = static_cast<const char*>(src.storage_->data()) + src.offset_bytes_;
  const CopyFn copy = CopyBetween(storage_.get(), src.storage_.get());
  if (copy != nullptr) {
    copy(dst, from, nbytes());
  } else {
    std::memcpy(dst, from, nbytes());
  }
}

std::vector<float> Tensor::ToF32Vector() const {
  LOOM_CHECK(IsFloatingPoint(dtype_)) << "Tensor::ToF32Vector on " << DebugString();
  std::vector<float> out(static_cast<size_t>(numel_));
  if (device_ != Device::kCpu) {
    Tensor host = Empty(shape_, dtype_, tag_, &Allocator::Default());
    host.CopyFrom(*this);
    ConvertBuffer(host.raw_data(), dtype_, out.data(), DType::kF32, numel_);
    return out;
  }
  ConvertBuffer(raw_data(), dtype_, out.data(), DType::kF32, numel_);
  return out;
}

void Tensor::Fill(float value) {
  if (device_ != Device::kCpu) {  // filled on the host, then copied over
    Tensor host = Empty(shape_, dtype_, tag_, &Allocator::Default());
    host.Fill(value);
    CopyFrom(host);
    return;
  }
  if (dtype_ == DType::kI32) {
    std::fill_n(data<int32_t>(), numel_, static_cast<int32_t>(value));
    return;
  }
  if (dtype_ == DType::kI64) {
    std::fill_n(data<int64_t>(), numel_, static_cast<int64_t>(value));
    return;
  }
  const std::vector<float> values(static_cast<size_t>(numel_), value);
  ConvertBuffer(values.data(), DType::kF32, raw_data(), dtype_, numel_);
}

std::string Tensor::DebugString() const {
  return absl::StrCat(DTypeName(dtype_), ShapeToString(shape_),
                      device_ == Device::kCpu ? "" : "@cuda");
}

}  // namespace loom::runtime
