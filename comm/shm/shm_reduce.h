// The element-wise reduction the shm algorithms run: like comm/reduce.h's ReduceBuffers (inputs
// combined in the order given, 16-bit floats accumulated in f32 and rounded once, avg = sum /
// divisor), so results are bitwise equal to the other backends', but vectorised (AVX-512 / AVX2
// clones chosen at load time), writing up to two outputs in one pass, and safe when an output
// aliases any input element for element (in-place calls).
//
//   const void* inputs[] = {mine, peer_slot};
//   ReduceInto(DType::kF32, ReduceOp::kSum, inputs, 2, out, shared_result, n, /*avg_divisor=*/2);
#pragma once

#include <cstddef>
#include <cstdint>

#include "comm/types.h"
#include "runtime/dtype.h"

namespace loom::comm {

// out[i] = inputs[0][i] op inputs[1][i] op ... op inputs[k-1][i] for i in [0, n); the same into
// out2 when it is not null. `stream_out` / `stream_out2`: write that output with non-temporal
// stores (no read-for-ownership, no invalidation of other cores' copies one line at a time, no
// eviction of the data the next steps reuse). Host memory, synchronous, single-threaded.
void ReduceInto(runtime::DType dtype, ReduceOp op, const void* const* inputs, int num_inputs,
                void* out, void* out2, int64_t n, int avg_divisor, bool stream_out = false,
                bool stream_out2 = false);

// memcpy for the shm paths (non-overlapping buffers) with vector moves instead of libc's
// `rep movsb`, which is markedly slower for KiB-sized copies on some CPUs (AMD Zen under KVM);
// `stream` as above.
void CopyFast(void* dst, const void* src, size_t bytes, bool stream = false);
// The same bytes to two destinations in one pass over the source; `stream` as above, for `dst`.
void CopyFast2(void* dst, void* dst2, const void* src, size_t bytes, bool stream = false);

}  // namespace loom::comm
