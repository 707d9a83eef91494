// A CUDA device emulated on the host, for tests of the device path without a GPU: an allocator
// whose memory says kCuda (so host code, data<T>() and the CPU kernels refuse it, and copies go
// through its source), and a twin table whose entries copy their tensors to the host, run the
// CPU kernel through its entry point, and copy what it wrote back. Code that runs on emulated
// device tensors therefore touches their memory only through the dispatching entry points and
// Tensor's source-aware operations, exactly as on a GPU, and computes the CPU's bits: a model run
// on it must equal the host run bitwise. What it cannot check is the CUDA kernels themselves
// (tests/runtime/cuda/cuda_kernels_test.cc, label gpu).
//
//   EmulatedDevice device;                           // fills CudaTwins(); restores it when gone
//   AllocatorScope scope(&device.allocator());
//   GptModel model(config);  model.Initialize(7);    // parameters on the "device"
#pragma once

#include <cstring>
#include <span>
#include <tuple>
#include <type_traits>
#include <utility>
#include <vector>

#include "runtime/allocator.h"
#include "runtime/kernels/activation.h"
#include "runtime/kernels/adamw.h"
#include "runtime/kernels/attention.h"
#include "runtime/kernels/bias_add.h"
#include "runtime/kernels/cross_entropy.h"
#include "runtime/kernels/cuda_twins.h"
#include "runtime/kernels/elementwise.h"
#include "runtime/kernels/embedding.h"
#include "runtime/kernels/fp8.h"
#include "runtime/kernels/matmul.h"
#include "runtime/kernels/moe.h"
#include "runtime/kernels/norm.h"
#include "runtime/tensor.h"

namespace loom::runtime::testing {

namespace emulated {

inline int copies = 0;  // every copy through the emulated source (either direction)

inline MemorySource Source() {
  MemorySource source = MemorySource::Host();
  source.name = "emulated CUDA device";
  source.device = Device::kCuda;
  source.copy = [](void* dst, const void* src, size_t bytes) {
    ++copies;
    std::memcpy(dst, src, bytes);
  };
  source.set = [](void* p, int byte, size_t bytes) { std::memset(p, byte, bytes); };
  return source;
}

// A host copy of a (device) tensor argument; undefined stays undefined.
inline Tensor HostCopy(const Tensor& t) {
  if (!t.defined()) return t;
  Tensor host = Tensor::Empty(t.shape(), t.dtype(), t.tag(), &Allocator::Default());
  host.CopyFrom(t);
  return host;
}

// How a twin's argument reaches the host entry point: tensors as host copies, those the kernel
// may write (Tensor&, Tensor*) copied back afterwards; anything else as it is.
template <typename A>
struct Arg {
  explicit Arg(A v) : value(v) {}
  A get() { return value; }
  void Finish() {}
  A value;
};
template <>
struct Arg<const Tensor&> {
  explicit Arg(const Tensor& t) : host(HostCopy(t)) {}
  const Tensor& get() { return host; }
  void Finish() {}
  Tensor host;
};
template <>
struct Arg<Tensor&> {
  explicit Arg(Tensor& t) : device(&t), host(HostCopy(t)) {}
  Tensor& get() { return host; }
  void Finish() { device->CopyFrom(host); }
  Tensor* device;
  Tensor host;
};
template <>
struct Arg<Tensor*> {
  explicit Arg(Tensor* t) : device(t), host(t != nullptr ? HostCopy(*t) : Tensor()) {}
  Tensor* get() { return device != nullptr ? &host : nullptr; }
  void Finish() {
    if (device != nullptr) device->CopyFrom(host);
  }
  Tensor* device;
  Tensor host;
};

template <>
struct Arg<const Tensor*> {
  explicit Arg(const Tensor* t) : given(t), host(t != nullptr ? HostCopy(*t) : Tensor()) {}
  const Tensor* get() { return given != nullptr ? &host : nullptr; }
  void Finish() {}
  const Tensor* given;
  Tensor host;
};

// The twin for host entry point `Entry` (same signature as the table's slot).
template <auto Entry, typename Signature = decltype(Entry)>
struct Twin;
template <auto Entry, typename R, typename... A>
struct Twin<Entry, R (*)(A...)> {
  static R Run(A... args) {
    std::tuple<Arg<A>...> host(Arg<A>(std::forward<A>(args))...);
    auto call = [](Arg<A>&... a) { return Entry(a.get()...); };
    if constexpr (std::is_void_v<R>) {
      std::apply(call, host);
      std::apply([](Arg<A>&... a) { (a.Finish(), ...); }, host);
    } else {
      R result = std::apply(call, host);
      std::apply([](Arg<A>&... a) { (a.Finish(), ...); }, host);
      return result;
    }
  }
};

// Host entry points under the table's signatures where they differ from the public ones.
inline void EmbeddingForward(const Tensor& ids, const Tensor& table, int64_t vocab_start,
                             bool sharded, Tensor& out) {
  if (sharded) return kernels::EmbeddingShardForward(ids, table, vocab_start, out);
  kernels::EmbeddingForward(ids, table, out);
}
inline void EmbeddingBackward(const Tensor& dout, const Tensor& ids, int64_t vocab_start,
                              bool sharded, Tensor& dtable) {
  if (sharded) return kernels::EmbeddingShardBackward(dout, ids, vocab_start, dtable);
  kernels::EmbeddingBackward(dout, ids, dtable);
}
inline void Matmul(const Tensor& a, const Tensor& b, Tensor& out, int64_t, int64_t, int64_t,
                   const kernels::MatmulOptions& options) {
  kernels::MatmulOptions on_host = options;
  const Tensor bias = options.bias != nullptr ? HostCopy(*options.bias) : Tensor();
  if (options.bias != nullptr) on_host.bias = &bias;
  kernels::Matmul(a, b, out, on_host);
}

}  // namespace emulated

class EmulatedDevice {
 public:
  EmulatedDevice() : saved_(kernels::CudaTwins()), allocator_(0, emulated::Source()) {
    using emulated::Twin;
    kernels::CudaTwinTable& t = kernels::CudaTwins();
    t.add = Twin<&kernels::Add>::Run;
    t.gelu_forward = Twin<&kernels::GeluForward>::Run;
    t.gelu_backward = Twin<&kernels::GeluBackward>::Run;
    t.adamw = Twin<&kernels::AdamWUpdate>::Run;
    t.adamw_many = [](std::span<const kernels::AdamWTensors> tensors,
                      const kernels::AdamWConfig& config, int64_t step) {
      std::vector<kernels::AdamWTensors> host;
      for (const kernels::AdamWTensors& d : tensors) {
        host.push_back({emulated::HostCopy(d.master), emulated::HostCopy(d.grad),
                        emulated::HostCopy(d.m), emulated::HostCopy(d.v), d.decay});
      }
      kernels::AdamWUpdateMany(host, config, step);
      for (size_t i = 0; i < host.size(); ++i) {  // handles: the copies land in the storage
        Tensor master = tensors[i].master, m = tensors[i].m, v = tensors[i].v;
        master.CopyFrom(host[i].master);
        m.CopyFrom(host[i].m);
        v.CopyFrom(host[i].v);
      }
    };
    t.sgd = Twin<&kernels::SgdUpdate>::Run;
    t.layer_norm_forward = Twin<&kernels::LayerNormForward>::Run;
    t.layer_norm_backward = Twin<&kernels::LayerNormBackward>::Run;
    t.rms_norm_forward = Twin<&kernels::RMSNormForward>::Run;
    t.rms_norm_backward = Twin<&kernels::RMSNormBackward>::Run;
    t.swiglu_forward = Twin<&kernels::SwiGLUForward>::Run;
    t.swiglu_backward = Twin<&kernels::SwiGLUBackward>::Run;
    t.sum_of_squares = Twin<&kernels::SumOfSquares>::Run;
    t.sums_of_squares = [](std::span<const Tensor> xs, double* out) {
      for (size_t i = 0; i < xs.size(); ++i)
        out[i] = kernels::SumOfSquares(emulated::HostCopy(xs[i]));
    };
    t.add_into = Twin<&kernels::AddInto>::Run;
    t.scale = Twin<&kernels::Scale>::Run;
    t.convert = Twin<&kernels::Convert>::Run;
    t.round_to_dtype = Twin<&kernels::RoundToDType>::Run;
    t.bias_add = Twin<&kernels::BiasAdd>::Run;
    t.bias_backward = Twin<&kernels::BiasBackward>::Run;
    t.bias_gelu_forward = Twin<&kernels::BiasGeluForward>::Run;
    t.embedding_forward = Twin<&emulated::EmbeddingForward>::Run;
    t.embedding_backward = Twin<&emulated::EmbeddingBackward>::Run;
    t.cross_entropy_stats = Twin<&kernels::CrossEntropyStats>::Run;
    t.cross_entropy_rescale = Twin<&kernels::CrossEntropyRescaleSumExp>::Run;
    t.cross_entropy_loss = Twin<&kernels::CrossEntropyLoss>::Run;
    t.cross_entropy_backward = Twin<&kernels::CrossEntropyBackward>::Run;
    t.quantize_fp8 = Twin<&kernels::QuantizeFp8>::Run;
    t.fp8_matmul = Twin<&kernels::Fp8Matmul>::Run;
    t.moe_permute = Twin<&kernels::MoePermute>::Run;
    t.moe_combine = Twin<&kernels::MoeCombine>::Run;
    t.moe_combine_backward = Twin<&kernels::MoeCombineBackward>::Run;
    t.quantize_rows_fp8 = Twin<&kernels::QuantizeRowsFp8>::Run;
    t.dequantize_rows_fp8 = Twin<&kernels::DequantizeRowsFp8>::Run;
    t.attention_forward = Twin<&kernels::AttentionForward>::Run;
    t.attention_backward = Twin<&kernels::AttentionBackward>::Run;
    t.flash_attention_forward = Twin<&kernels::FlashAttentionForward>::Run;
    t.flash_attention_backward = Twin<&kernels::FlashAttentionBackward>::Run;
    t.check_indices = Twin<&kernels::CheckIndices>::Run;  // fails at once, as the host does
    t.check_errors = [] {};
    t.matmul = Twin<&emulated::Matmul>::Run;
  }
  ~EmulatedDevice() { kernels::CudaTwins() = saved_; }
  EmulatedDevice(const EmulatedDevice&) = delete;
  EmulatedDevice& operator=(const EmulatedDevice&) = delete;

  Allocator& allocator() { return allocator_; }

 private:
  kernels::CudaTwinTable saved_;
  Allocator allocator_;
};

}  // namespace loom::runtime::testing
