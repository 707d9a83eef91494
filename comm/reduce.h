// Element-wise reductions shared by the communicator backends. Inputs are combined in the order
// given (rank order), so every rank that reduces the same inputs gets bitwise identical results;
// 16-bit floating types accumulate in f32 and are rounded once.
//
//   const void* inputs[] = {slot0, slot1, slot2};
//   ReduceBuffers(DType::kBF16, ReduceOp::kSum, inputs, 3, out, n, /*avg_divisor=*/3);
#pragma once

#include <cstdint>

#include "absl/status/status.h"
#include "comm/types.h"
#include "runtime/dtype.h"

namespace loom::comm {

// OK for the dtypes collectives carry (f32, bf16, f16, i32, i64) and the reductions defined on
// them (avg only for floating dtypes); InvalidArgument naming both otherwise.
absl::Status CheckReducible(runtime::DType dtype, ReduceOp op);
bool IsCommDType(runtime::DType dtype);

// out[i] = op over k of inputs[k][i], i in [0, n). kAvg divides the sum by `avg_divisor`.
// `out` may alias inputs[0] (and only inputs[0]). Host memory, synchronous, single-threaded.
void ReduceBuffers(runtime::DType dtype, ReduceOp op, const void* const* inputs, int num_inputs,
                   void* out, int64_t n, int avg_divisor);

}  // namespace loom::comm
