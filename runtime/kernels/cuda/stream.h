// CUDA streams and events, and stream-ordered memory reuse (issue #14; docs/gpu.md).
//
//   cuda::OwnedStream comm;                     // a non-blocking stream beside the default one
//   cuda::Event ready;
//   ready.Record(nullptr);                      // after the compute queued so far
//   comm.Wait(ready);                           // comm's later work runs after it: no host wait
//   ... queue a collective on comm.get() reading `buffer` ...
//   cuda::RecordUse(buffer, comm.get());        // `buffer`'s memory is reused only after that
//
// RecordUse records an event on the stream and attaches it to the tensor's storage as a fence
// (Tensor::RecordUse): when the last tensor goes, the device allocator keeps the block apart until
// the event has completed (BlockCache::GiveAfter), polling, never synchronising the host.
#pragma once

#include <memory>

#include "runtime/kernels/cuda/cuda_kernels.h"
#include "runtime/tensor.h"

struct CUevent_st;  // cudaEvent_t without the CUDA headers

namespace loom::runtime::kernels::cuda {

// An owned non-blocking stream (it does not wait for the legacy default stream).
class OwnedStream {
 public:
  OwnedStream();
  ~OwnedStream();
  OwnedStream(const OwnedStream&) = delete;
  OwnedStream& operator=(const OwnedStream&) = delete;
  cuda::Stream get() const { return stream_; }  // the raw cudaStream_t
  // Work queued on this stream after this call runs after `event`'s recorded point.
  void Wait(const class Event& event);

 private:
  cuda::Stream stream_ = nullptr;
};

// An owned event without timing (the cheapest kind).
class Event {
 public:
  Event();
  ~Event();
  Event(const Event&) = delete;
  Event& operator=(const Event&) = delete;
  // Marks the point after everything queued on `stream` so far (nullptr: the default stream).
  void Record(cuda::Stream stream);
  // Whether the recorded point has been reached (true before any Record).
  bool Done() const;
  struct CUevent_st* get() const {
    return event_;
  }

 private:
  CUevent_st* event_ = nullptr;
};

// `t`'s memory is used by the work queued on `stream` so far: it is reused only after that work.
void RecordUse(const Tensor& t, cuda::Stream stream);

}  // namespace loom::runtime::kernels::cuda
