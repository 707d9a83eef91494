// A PointToPoint transport between thread-ranks of one process, so that loom's point-to-point
// algorithms and the `ring` backend are tested without MPI (gloo-style: N ranks as threads).
//
//   std::vector<std::unique_ptr<PointToPoint>> ranks = MakeLocalPointToPoint(4);
//   // hand ranks[r] to thread r, or build communicators over the ring backend directly:
//   std::vector<std::unique_ptr<Communicator>> world = MakeLocalRingWorld(4);
//   // thread r: world[r]->AllReduce(t, t, ReduceOp::kSum)->Wait();
//
// Each group has mailboxes keyed by (source, destination, tag); a send copies the message into the
// destination's mailbox and returns at once (buffered), a receive waits on a condition variable
// until its message arrives or the deadline passes ("waiting for rank(s) 2 (receive, tag 0, ...)").
#pragma once

#include <memory>
#include <vector>

#include "comm/communicator.h"
#include "comm/p2p.h"
#include "comm/p2p_backend.h"

namespace loom::comm {

// `size` transports of one group; transport r has rank r and is used by one thread at a time.
// They share the group's mailboxes, which live as long as any of them (or a Split child).
std::vector<std::unique_ptr<PointToPoint>> MakeLocalPointToPoint(int size);

// `size` communicators over MakeP2PBackend(MakeLocalPointToPoint(size)[r], p2p_options): the ring
// backend with ranks as threads.
std::vector<std::unique_ptr<Communicator>> MakeLocalRingWorld(
    int size, CommOptions options = CommOptions{}, P2POptions p2p_options = P2POptions{});

}  // namespace loom::comm
