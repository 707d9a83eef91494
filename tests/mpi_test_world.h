// The world communicator of a test program run under mpirun (tests/mpi_test_main.cc): the backend
// named by LOOM_COMM_BACKEND (default shm), with a 120 s timeout so a hang becomes an error that
// fails mpirun instead of blocking the test run.
#pragma once

#include <memory>

#include "comm/communicator.h"

namespace loom::testing {

std::unique_ptr<comm::Communicator> MpiTestWorld();

}  // namespace loom::testing
