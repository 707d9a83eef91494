// The equivalence matrix under mpirun: the layouts of tests/parallel/matrix_layouts.h over one of
// loom's process backends (LOOM_COMM_BACKEND: shm, ring, hier, ...) instead of thread ranks, each
// against the single-rank run every rank computes on its own. A job of N ranks runs each layout
// of R <= N ranks (R dividing N) on N / R groups of R at once. The layouts: every 4th of the
// matrix's slice (LOOM_MATRIX=full: the whole matrix), host layouts only (the emulated device is
// a thread-rank test's).
#include <gtest/gtest.h>

#include <cstdlib>
#include <memory>
#include <string>
#include <vector>

#include "parallel/context.h"
#include "parallel/mesh.h"
#include "runtime/parallel.h"
#include "tests/mpi_test_world.h"
#include "tests/parallel/matrix_layouts.h"

namespace loom::testing {
namespace {

std::vector<MatrixLayout> Layouts() {
  const char* which = std::getenv("LOOM_MATRIX");
  if (which != nullptr && std::string(which) == "full") return EnumerateMatrix();
  const std::vector<MatrixLayout> slice = MatrixSlice();
  std::vector<MatrixLayout> every4th;
  for (size_t i = 0; i < slice.size(); i += 4) every4th.push_back(slice[i]);
  return every4th;
}

TEST(MatrixUnderMpirun, LayoutsEqualTheSingleRankRun) {
  runtime::SetNumThreads(1);
  std::unique_ptr<comm::Communicator> world = MpiTestWorld();
  const int n = world->size(), rank = world->rank();
  int ran = 0;
  for (const MatrixLayout& l : Layouts()) {
    const int ranks = l.dp * l.tp * l.pp * l.ep;
    if (l.device || ranks > n || n % ranks != 0) continue;
    absl::StatusOr<std::unique_ptr<comm::Communicator>> group = world->Split(rank / ranks, rank);
    ASSERT_TRUE(group.ok()) << l.Name() << ": " << group.status();
    absl::StatusOr<std::unique_ptr<parallel::Mesh>> mesh = parallel::Mesh::Create(
        **group, parallel::MeshShape{.dp = l.dp, .tp = l.tp, .pp = l.pp, .ep = l.ep});
    ASSERT_TRUE(mesh.ok()) << l.Name() << ": " << mesh.status();
    const RunResult got = Train(l.Options(), parallel::ParallelContext::FromMesh(**mesh));
    ExpectEquivalentWhereHeld(MatrixReference(l.ReferenceFor()), got,
                              l.Name() + " rank " + std::to_string(rank), MatrixTolerance(l));
    ++ran;
  }
  EXPECT_GT(ran, 0);
  if (rank == 0) std::printf("%d layouts on %d ranks\n", ran, n);
}

}  // namespace
}  // namespace loom::testing
