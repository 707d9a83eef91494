// loom's TCP socket transport (comm/socket/socket_p2p.h) with thread ranks as its control plane:
//  - the ring backend over it passes the shared collective sweep for 1-4 ranks, also on the
//    groups of a Split;
//  - tags: a buffered message of another tag waits until asked for, in order; a size mismatch is
//    an error naming both ranks; large messages both ways at once arrive intact;
//  - failures: a peer that never sends fails the receive at its deadline naming it, a peer whose
//    transport is gone fails it at once, and an unknown LOOM_SOCKET_IFNAME is named.
#include "comm/socket/socket_p2p.h"

#include <gtest/gtest.h>

#include <chrono>
#include <cstring>
#include <numeric>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "comm/local/local_p2p.h"
#include "comm/p2p_backend.h"
#include "tests/comm/collective_checks.h"
#include "tests/comm/p2p_test_util.h"

namespace loom::comm {
namespace {

using testing::OnThreads;

Deadline In(std::chrono::milliseconds ms) { return {std::chrono::steady_clock::now() + ms}; }
Deadline Generous() { return In(std::chrono::milliseconds(60'000)); }

// `n` socket transports, bootstrapped over thread-rank control transports (one per thread).
std::vector<std::unique_ptr<PointToPoint>> SocketWorld(int n, SocketOptions options = {}) {
  std::vector<std::unique_ptr<PointToPoint>> control = MakeLocalPointToPoint(n);
  std::vector<std::unique_ptr<PointToPoint>> sockets(n);
  OnThreads(n, [&](int r) {
    absl::StatusOr<std::unique_ptr<PointToPoint>> s =
        MakeSocketPointToPoint(std::move(control[r]), options, Generous());
    ASSERT_TRUE(s.ok()) << s.status();
    sockets[r] = std::move(s).value();
  });
  return sockets;
}

TEST(SocketP2PTest, RingBackendPassesTheCollectiveSweep) {
  for (int n = 1; n <= 4; ++n) {
    SCOPED_TRACE(absl::StrCat("world ", n));
    std::vector<std::unique_ptr<PointToPoint>> sockets = SocketWorld(n);
    testing::SweepOptions options;
    options.counts = {0, 1, 7, 4099, 1 << 20};
    OnThreads(n, [&](int r) {
      Communicator c(MakeP2PBackend(std::move(sockets[r])), CommOptions{});
      testing::RunCollectiveSweep(c, options);
    });
  }
}

TEST(SocketP2PTest, SplitGroupsAreIndependentTransports) {
  std::vector<std::unique_ptr<PointToPoint>> sockets = SocketWorld(4);
  OnThreads(4, [&](int r) {
    const std::vector<int> members = r % 2 == 0 ? std::vector<int>{0, 2} : std::vector<int>{1, 3};
    absl::StatusOr<std::unique_ptr<PointToPoint>> half = sockets[r]->Split(members, Generous());
    ASSERT_TRUE(half.ok()) << half.status();
    EXPECT_EQ((*half)->size(), 2);
    EXPECT_EQ((*half)->rank(), r / 2);
    Communicator c(MakeP2PBackend(std::move(half).value()), CommOptions{});
    testing::SweepOptions options;
    options.counts = {0, 7, 4099};
    testing::RunCollectiveSweep(c, options);
  });
}

TEST(SocketP2PTest, OtherTagsWaitInOrderAndLargeMessagesCrossBothWays) {
  std::vector<std::unique_ptr<PointToPoint>> s = SocketWorld(2);
  const size_t big = size_t{32} << 20;
  OnThreads(2, [&](int r) {
    PointToPoint& p = *s[r];
    if (r == 0) {
      const int a = 5, b = 6, c = 7;
      ASSERT_TRUE(p.SendBuffered(&a, sizeof(a), 1, /*tag=*/3, Generous()).ok());
      ASSERT_TRUE(p.SendBuffered(&b, sizeof(b), 1, /*tag=*/3, Generous()).ok());
      ASSERT_TRUE(p.Send(&c, sizeof(c), 1, /*tag=*/9, Generous()).ok());
    } else {
      int got = 0;
      ASSERT_TRUE(p.Recv(&got, sizeof(got), 0, /*tag=*/9, Generous()).ok());
      EXPECT_EQ(got, 7);
      ASSERT_TRUE(p.Recv(&got, sizeof(got), 0, /*tag=*/3, Generous()).ok());
      EXPECT_EQ(got, 5);
      ASSERT_TRUE(p.Recv(&got, sizeof(got), 0, /*tag=*/3, Generous()).ok());
      EXPECT_EQ(got, 6);
    }
    // Both directions at once, larger than any socket buffer.
    std::vector<uint32_t> out(big / 4), in(big / 4, 0);
    std::iota(out.begin(), out.end(), static_cast<uint32_t>(r) << 28);
    ASSERT_TRUE(p.SendRecv(out.data(), big, 1 - r, in.data(), big, 1 - r, 0, Generous()).ok());
    for (size_t i = 0; i < in.size(); i += 4099) {
      ASSERT_EQ(in[i], (static_cast<uint32_t>(1 - r) << 28) + i) << "element " << i;
    }
    ASSERT_EQ(in.back(), (static_cast<uint32_t>(1 - r) << 28) + in.size() - 1);
  });
}

TEST(SocketP2PTest, SizeMismatchNamesBothRanks) {
  std::vector<std::unique_ptr<PointToPoint>> s = SocketWorld(2);
  OnThreads(2, [&](int r) {
    char buf[16] = {};
    if (r == 0) {
      ASSERT_TRUE(s[0]->Send(buf, 16, 1, 0, Generous()).ok());
    } else {
      const absl::Status st = s[1]->Recv(buf, 8, 0, 0, Generous());
      EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument) << st;
      EXPECT_NE(st.message().find("rank 1 expected 8 bytes from rank 0 (tag 0) but the message "
                                  "has 16"),
                std::string::npos)
          << st;
    }
  });
}

TEST(SocketP2PTest, SilentPeerTimesOutNamingIt) {
  std::vector<std::unique_ptr<PointToPoint>> s = SocketWorld(2);
  char buf[4];
  const absl::Status st = s[0]->Recv(buf, 4, 1, 0, In(std::chrono::milliseconds(200)));
  EXPECT_EQ(st.code(), absl::StatusCode::kDeadlineExceeded) << st;
  EXPECT_NE(st.message().find("waiting for rank(s) 1 (receive, tag 0, 4 bytes"), std::string::npos)
      << st;
}

TEST(SocketP2PTest, PeerThatIsGoneFailsTheCallAtOnce) {
  std::vector<std::unique_ptr<PointToPoint>> s = SocketWorld(3);
  s[2].reset();  // its sockets close, as when its process exits
  char buf[4];
  const auto start = std::chrono::steady_clock::now();
  const absl::Status st = s[0]->Recv(buf, 4, 2, 0, Generous());
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(5));
  EXPECT_EQ(st.code(), absl::StatusCode::kUnavailable) << st;
  EXPECT_NE(st.message().find("rank 2 closed its connection"), std::string::npos) << st;
  // The transport is unusable afterwards, with the same error.
  EXPECT_EQ(s[0]->Send(buf, 4, 1, 0, Generous()), st);
}

TEST(SocketP2PTest, UnknownInterfaceIsNamed) {
  std::vector<std::unique_ptr<PointToPoint>> control = MakeLocalPointToPoint(1);
  const absl::StatusOr<std::unique_ptr<PointToPoint>> s =
      MakeSocketPointToPoint(std::move(control[0]), {.ifname = "nosuchif0"}, Generous());
  EXPECT_EQ(s.status().code(), absl::StatusCode::kNotFound);
  EXPECT_NE(s.status().message().find("LOOM_SOCKET_IFNAME=nosuchif0"), std::string::npos)
      << s.status();
}

}  // namespace
}  // namespace loom::comm
