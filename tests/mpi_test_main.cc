// main() of the GoogleTest programs that run under mpirun: MPI is initialised (thread-multiple)
// before the tests and finalized at exit by comm::MpiEnvironment.
#include <gtest/gtest.h>

#include <cstdio>
#include <cstdlib>
#include <string>

#include "comm/mpi/mpi_env.h"
#include "comm/world.h"
#include "runtime/base/check.h"
#include "tests/mpi_test_world.h"

namespace loom::testing {

std::unique_ptr<comm::Communicator> MpiTestWorld() {
  const char* backend = std::getenv("LOOM_COMM_BACKEND");
  comm::CommOptions options;
  options.timeout = absl::Seconds(120);  // a hang becomes MPI_Abort, so mpirun fails
  auto world = comm::MakeWorldCommunicator(backend == nullptr ? "shm" : backend, options);
  LOOM_CHECK(world.ok()) << world.status();
  return std::move(world).value();
}

}  // namespace loom::testing

int main(int argc, char** argv) {
  ::testing::InitGoogleTest(&argc, argv);
  absl::StatusOr<loom::comm::MpiEnvironment*> mpi = loom::comm::MpiEnvironment::Init(&argc, &argv);
  if (!mpi.ok()) {
    std::fprintf(stderr, "%s\n", std::string(mpi.status().message()).c_str());
    return 1;
  }
  return RUN_ALL_TESTS();
}
