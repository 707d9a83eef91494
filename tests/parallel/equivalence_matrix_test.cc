// The equivalence matrix on thread ranks over loom's local backend: every layout of
// tests/parallel/matrix_layouts.h against the single-rank run (docs/equivalence.md).
//
// Suites: `Slice` (ctest `equivalence_matrix_slice`, in every test run) and `Full` (ctest
// `equivalence_matrix`, label `matrix`: `bash scripts/test.sh -L matrix`). MatrixCoverage checks
// that every axis value appears.
#include <gtest/gtest.h>

#include <optional>
#include <set>
#include <string>

#include "absl/strings/str_cat.h"
#include "runtime/parallel.h"
#include "tests/parallel/matrix_layouts.h"
#include "tests/runtime/emulated_device.h"

namespace loom::testing {
namespace {

class Matrix : public ::testing::TestWithParam<MatrixLayout> {
 protected:
  static void SetUpTestSuite() { runtime::SetNumThreads(1); }
};

TEST_P(Matrix, EqualsTheSingleRankRun) {
  const MatrixLayout& l = GetParam();
  models::TrainOptions o = l.Options();
  std::optional<runtime::testing::EmulatedDevice> device;
  if (l.device) o.device = &device.emplace().allocator();
  const absl::Status valid = models::ValidateTrainOptions(o);
  ASSERT_TRUE(valid.ok()) << l.Name() << ": " << valid;
  const Tolerance tolerance = MatrixTolerance(l);
  ExpectEquivalentOnRanks(MatrixReference(l.ReferenceFor()), TrainOnMesh(o), l.Name(), tolerance);
}

// The matrix covers what it says: every axis takes every value somewhere.
TEST(MatrixCoverage, EveryAxisValueAppears) {
  const std::vector<MatrixLayout> all = EnumerateMatrix();
  std::set<std::string> seen;
  for (const MatrixLayout& l : all) {
    seen.insert(absl::StrCat("dp", l.dp));
    seen.insert(absl::StrCat("tp", l.tp));
    seen.insert(absl::StrCat("pp", l.pp));
    seen.insert(absl::StrCat("ep", l.ep));
    seen.insert(absl::StrCat("zero", l.zero));
    if (l.hsdp_shard > 0) seen.insert("hsdp");
    if (l.sequence_parallel) seen.insert("sp");
    if (l.fold) seen.insert("fold");
    if (l.recompute) seen.insert("recompute");
    if (l.autocast) seen.insert("autocast");
    if (l.device) seen.insert("device");
    if (l.grad_accum > 1) seen.insert("accum");
    if (l.sparse_embedding) seen.insert("sparse_embedding");
    seen.insert(absl::StrCat("moe", static_cast<int>(l.moe)));
    seen.insert(l.schedule);
    seen.insert(l.preset);
    seen.insert(l.precision);
  }
  for (const char* v : {"dp4",         "tp4",      "pp2",        "ep4",      "zero3",
                        "hsdp",        "sp",       "fold",       "zb-h1",    "gpipe",
                        "interleaved", "zb-v",     "dualpipe-v", "tiny-moe", "bf16",
                        "fp16",        "autocast", "recompute",  "device",   "accum",
                        "moe1",        "moe2",     "moe3",       "moe4",     "sparse_embedding"}) {
    EXPECT_TRUE(seen.count(v)) << v;
  }
  EXPECT_LT(MatrixSlice().size(), all.size());
}

std::string LayoutName(const ::testing::TestParamInfo<MatrixLayout>& info) {
  return info.param.Name();
}

INSTANTIATE_TEST_SUITE_P(Slice, Matrix, ::testing::ValuesIn(MatrixSlice()), LayoutName);
INSTANTIATE_TEST_SUITE_P(Full, Matrix, ::testing::ValuesIn(EnumerateMatrix()), LayoutName);

}  // namespace
}  // namespace loom::testing
