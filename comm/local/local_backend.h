// The `local` backend: N ranks as threads of one process, for fast multi-rank unit tests.
//
//   std::vector<std::unique_ptr<Communicator>> world = MakeLocalWorld(4, options);
//   // hand world[r] to thread r; each thread calls the same collectives in the same order
//
// Ranks exchange through per-rank staging buffers in process memory (every call copies its input
// once, then each rank computes its output from all ranks' staged inputs in rank order), so
// results are bitwise identical on every rank and in-place calls are safe. Send is buffered.
#pragma once

#include <memory>
#include <vector>

#include "comm/communicator.h"

namespace loom::comm {

std::vector<std::unique_ptr<Communicator>> MakeLocalWorld(int size,
                                                          CommOptions options = CommOptions{});

}  // namespace loom::comm
