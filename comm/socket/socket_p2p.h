// A PointToPoint transport over TCP sockets: loom's own data path between hosts, under the
// `ring` and `hier` backends when LOOM_P2P_TRANSPORT=socket. Another transport (MPI's, or thread
// ranks in tests) is its control plane: it carries the bootstrap (every rank's listening
// address), Split, the arrival board that names missing ranks, and Abort; the bytes of every
// message go over one TCP connection per pair of ranks.
//
//   LOOM_ASSIGN_OR_RETURN(std::unique_ptr<PointToPoint> mpi, MakeMpiPointToPoint());
//   LOOM_ASSIGN_OR_RETURN(std::unique_ptr<PointToPoint> p2p,
//                         MakeSocketPointToPoint(std::move(mpi), SocketOptions::FromEnv(),
//                                                deadline));
//   Communicator world(MakeP2PBackend(std::move(p2p)), CommOptions::FromEnv());
//
// Why: on a rate-limited link Open MPI 4.1's TCP transport moves a two-way exchange at about half
// the link rate per direction (docs/cluster.md); a socket written and read from one thread with
// poll() keeps both directions full. Each message is a 16-byte header (tag, size) and its bytes;
// messages between two ranks arrive in the order sent, a message whose tag is not the one being
// received is kept until it is asked for, so different tags never match. SendRecv writes and
// reads with poll() until both halves are done or the deadline passes (DeadlineExceeded naming the
// peer); a peer that closes its connection (it exited) fails the call at once. SendBuffered
// copies the message and finishes writing it during later calls. Not thread-safe (one caller).
#pragma once

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "comm/p2p.h"

namespace loom::comm {

struct SocketOptions {
  // The network interface whose IPv4 address this rank listens on and gives its peers
  // (LOOM_SOCKET_IFNAME, as NCCL_SOCKET_IFNAME); empty: the first interface that is up and not
  // loopback, else loopback.
  std::string ifname;

  static SocketOptions FromEnv();
};

// Collective over `control`'s group: every rank calls it. Listens on the chosen interface,
// exchanges addresses over `control` and connects every pair of ranks (the lower rank connects),
// all before `deadline`. The result has `control`'s ranks and size and owns `control`.
absl::StatusOr<std::unique_ptr<PointToPoint>> MakeSocketPointToPoint(
    std::unique_ptr<PointToPoint> control, const SocketOptions& options, Deadline deadline);

}  // namespace loom::comm
