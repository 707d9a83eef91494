#include "runtime/kernels/embedding.h"

#include "absl/strings/str_cat.h"
#include "runtime/kernels/arg_check.h"
#include "runtime/kernels/cpu/cpu_kernels.h"
#include "runtime/kernels/cuda_twins.h"
#include "runtime/kernels/elementwise.h"

namespace loom::runtime::kernels {
namespace {

// `sharded`: the table is one shard of a vocabulary, so ids need only be non-negative.
void CheckEmbeddingArgs(const ArgCheck& check, const Tensor& ids, const Tensor& table,
                        const Tensor& rows, bool sharded = false) {
  check.ExpectDType(ids, DType::kI32);
  check.ExpectDType(table, DType::kF32);
  check.ExpectRank(table, 2);
  check.ExpectDType(rows, DType::kF32);
  Shape expected = ids.shape();
  expected.push_back(table.dim(1));
  check.ExpectShape(rows, expected);
  if (ids.device() != Device::kCpu) {  // checked on the device, reported by CheckDeviceErrors
    CheckIndices(ids, sharded ? int64_t{1} << 31 : table.dim(0), "Embedding ids");
    return;
  }
  const int32_t* id = ids.data<int32_t>();
  for (int64_t i = 0; i < ids.numel(); ++i) {
    check.Expect(
        id[i] >= 0 && (sharded || id[i] < table.dim(0)),
        absl::StrCat("ids[", i, "] = ", id[i], " is outside the table's ", table.dim(0), " rows"));
  }
}

void Forward(absl::string_view op, const Tensor& ids, const Tensor& table, int64_t vocab_start,
             bool sharded, Tensor& out) {
  const ArgCheck check(op, {{"ids", &ids}, {"table", &table}, {"out", &out}});
  CheckEmbeddingArgs(check, ids, table, out, sharded);
  if (check.OnCuda()) {
    return check.Twin(CudaTwins().embedding_forward)(ids, table, vocab_start, sharded, out);
  }
  cpu::EmbeddingForward(ids, table, vocab_start, out);
}

void Backward(absl::string_view op, const Tensor& dout, const Tensor& ids, int64_t vocab_start,
              bool sharded, Tensor& dtable) {
  const ArgCheck check(op, {{"dout", &dout}, {"ids", &ids}, {"dtable", &dtable}});
  CheckEmbeddingArgs(check, ids, dtable, dout, sharded);
  if (check.OnCuda()) {
    return check.Twin(CudaTwins().embedding_backward)(dout, ids, vocab_start, sharded, dtable);
  }
  cpu::EmbeddingBackward(dout, ids, vocab_start, dtable);
}

}  // namespace

void EmbeddingForward(const Tensor& ids, const Tensor& table, Tensor& out) {
  Forward("EmbeddingForward", ids, table, 0, /*sharded=*/false, out);
}

void EmbeddingShardForward(const Tensor& ids, const Tensor& table, int64_t vocab_start,
                           Tensor& out) {
  Forward("EmbeddingShardForward", ids, table, vocab_start, /*sharded=*/true, out);
}

void EmbeddingBackward(const Tensor& dout, const Tensor& ids, Tensor& dtable) {
  Backward("EmbeddingBackward", dout, ids, 0, /*sharded=*/false, dtable);
}

void EmbeddingShardBackward(const Tensor& dout, const Tensor& ids, int64_t vocab_start,
                            Tensor& dtable) {
  Backward("EmbeddingShardBackward", dout, ids, vocab_start, /*sharded=*/true, dtable);
}

}  // namespace loom::runtime::kernels
