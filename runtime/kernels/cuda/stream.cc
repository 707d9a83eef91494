#include "runtime/kernels/cuda/stream.h"

#include <cuda_runtime.h>

#include "runtime/base/check.h"

namespace loom::runtime::kernels::cuda {
namespace {

void Check(cudaError_t e, const char* what) {
  LOOM_CHECK(e == cudaSuccess) << "CUDA " << what << ": " << cudaGetErrorString(e);
}

}  // namespace

OwnedStream::OwnedStream() {
  Check(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking), "stream");
}

OwnedStream::~OwnedStream() { (void)cudaStreamDestroy(stream_); }

void OwnedStream::Wait(const Event& event) {
  Check(cudaStreamWaitEvent(stream_, event.get(), 0), "stream wait");
}

Event::Event() { Check(cudaEventCreateWithFlags(&event_, cudaEventDisableTiming), "event"); }

Event::~Event() { (void)cudaEventDestroy(event_); }

void Event::Record(cuda::Stream stream) { Check(cudaEventRecord(event_, stream), "event record"); }

bool Event::Done() const {
  const cudaError_t e = cudaEventQuery(event_);
  if (e == cudaErrorNotReady) return false;
  Check(e, "event query");
  return true;
}

void RecordUse(const Tensor& t, cuda::Stream stream) {
  auto event = std::make_shared<Event>();
  event->Record(stream);
  t.RecordUse([event] { return event->Done(); });
}

}  // namespace loom::runtime::kernels::cuda
