// main() of the GoogleTest programs that run under mpirun: MPI is initialised (thread-multiple)
// before the tests and finalized at exit by comm::MpiEnvironment.
#include <gtest/gtest.h>

#include <cstdio>
#include <string>

#include "comm/mpi/mpi_env.h"

int main(int argc, char** argv) {
  ::testing::InitGoogleTest(&argc, argv);
  absl::StatusOr<loom::comm::MpiEnvironment*> mpi = loom::comm::MpiEnvironment::Init(&argc, &argv);
  if (!mpi.ok()) {
    std::fprintf(stderr, "%s\n", std::string(mpi.status().message()).c_str());
    return 1;
  }
  return RUN_ALL_TESTS();
}
