#include "runtime/kernels/embedding.h"

#include "absl/strings/str_cat.h"
#include "runtime/kernels/arg_check.h"
#include "runtime/kernels/cpu/cpu_kernels.h"

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
  const int32_t* id = ids.data<int32_t>();
  for (int64_t i = 0; i < ids.numel(); ++i) {
    check.Expect(
        id[i] >= 0 && (sharded || id[i] < table.dim(0)),
        absl::StrCat("ids[", i, "] = ", id[i], " is outside the table's ", table.dim(0), " rows"));
  }
  check.RequireCpu();
}

}  // namespace

void EmbeddingForward(const Tensor& ids, const Tensor& table, Tensor& out) {
  CheckEmbeddingArgs(
      ArgCheck("EmbeddingForward", {{"ids", &ids}, {"table", &table}, {"out", &out}}), ids, table,
      out);
  cpu::EmbeddingForward(ids, table, 0, out);
}

void EmbeddingShardForward(const Tensor& ids, const Tensor& table, int64_t vocab_start,
                           Tensor& out) {
  CheckEmbeddingArgs(
      ArgCheck("EmbeddingShardForward", {{"ids", &ids}, {"table", &table}, {"out", &out}}), ids,
      table, out, /*sharded=*/true);
  cpu::EmbeddingForward(ids, table, vocab_start, out);
}

void EmbeddingBackward(const Tensor& dout, const Tensor& ids, Tensor& dtable) {
  CheckEmbeddingArgs(
      ArgCheck("EmbeddingBackward", {{"dout", &dout}, {"ids", &ids}, {"dtable", &dtable}}), ids,
      dtable, dout);
  cpu::EmbeddingBackward(dout, ids, 0, dtable);
}

void EmbeddingShardBackward(const Tensor& dout, const Tensor& ids, int64_t vocab_start,
                            Tensor& dtable) {
  CheckEmbeddingArgs(
      ArgCheck("EmbeddingShardBackward", {{"dout", &dout}, {"ids", &ids}, {"dtable", &dtable}}),
      ids, dtable, dout, /*sharded=*/true);
  cpu::EmbeddingBackward(dout, ids, vocab_start, dtable);
}

}  // namespace loom::runtime::kernels
