#include "comm/socket/socket_p2p.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <ifaddrs.h>
#include <net/if.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <optional>
#include <utility>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "runtime/base/env.h"
#include "runtime/base/status_macros.h"

namespace loom::comm {
namespace {

using Clock = std::chrono::steady_clock;

constexpr uint32_t kMagic = 0x4d4f4f4c;  // "LOOM" on the wire
constexpr int kBootstrapTag = 1 << 20;
constexpr std::chrono::microseconds kSpin{50};  // polling without sleeping after any progress

struct Header {
  uint32_t magic;
  int32_t tag;
  uint64_t bytes;
};
static_assert(sizeof(Header) == 16);

// A rank's listening endpoint, in network byte order.
struct Address {
  uint32_t ip;
  uint16_t port;
  uint16_t unused;
};
static_assert(sizeof(Address) == 8);

absl::Status SysError(absl::string_view what) {
  return absl::UnavailableError(absl::StrCat(what, ": ", std::strerror(errno)));
}

std::string Dotted(uint32_t ip) {
  char text[INET_ADDRSTRLEN] = {};
  in_addr a{ip};
  inet_ntop(AF_INET, &a, text, sizeof(text));
  return text;
}

// Milliseconds until `deadline` (0 when passed), at most `cap`.
int MillisLeft(Deadline deadline, int cap = 1000) {
  const auto left =
      std::chrono::duration_cast<std::chrono::milliseconds>(deadline.at - Clock::now()).count();
  return static_cast<int>(std::clamp<int64_t>(left, 0, cap));
}

// The IPv4 address of `ifname`, or of the first interface that is up and not loopback.
absl::StatusOr<uint32_t> ChooseAddress(const std::string& ifname) {
  ifaddrs* list = nullptr;
  if (getifaddrs(&list) != 0) return SysError("getifaddrs");
  std::optional<uint32_t> chosen, loopback;
  std::vector<std::string> names;
  for (ifaddrs* i = list; i != nullptr; i = i->ifa_next) {
    if (i->ifa_addr == nullptr || i->ifa_addr->sa_family != AF_INET) continue;
    const uint32_t ip = reinterpret_cast<sockaddr_in*>(i->ifa_addr)->sin_addr.s_addr;
    names.push_back(i->ifa_name);
    if (!ifname.empty()) {
      if (ifname == i->ifa_name && !chosen) chosen = ip;
    } else if ((i->ifa_flags & IFF_UP) && (i->ifa_flags & IFF_LOOPBACK)) {
      if (!loopback) loopback = ip;
    } else if ((i->ifa_flags & IFF_UP) && !chosen) {
      chosen = ip;
    }
  }
  freeifaddrs(list);
  if (chosen) return *chosen;
  if (ifname.empty() && loopback) return *loopback;
  return absl::NotFoundError(absl::StrCat(
      ifname.empty()
          ? "no IPv4 interface is up"
          : absl::StrCat("LOOM_SOCKET_IFNAME=", ifname, ": no IPv4 interface of that name"),
      " (IPv4 interfaces: ", names.empty() ? "none" : absl::StrJoin(names, ", "), ")"));
}

class Fd {
 public:
  explicit Fd(int fd = -1) : fd_(fd) {}
  Fd(Fd&& o) noexcept : fd_(std::exchange(o.fd_, -1)) {}
  Fd& operator=(Fd&& o) noexcept {
    if (this != &o) {
      Reset();
      fd_ = std::exchange(o.fd_, -1);
    }
    return *this;
  }
  ~Fd() { Reset(); }
  int get() const { return fd_; }
  void Reset() {
    if (fd_ >= 0) close(fd_);
    fd_ = -1;
  }

 private:
  int fd_;
};

absl::Status SetNonBlocking(int fd) {
  const int flags = fcntl(fd, F_GETFL, 0);
  if (flags < 0 || fcntl(fd, F_SETFL, flags | O_NONBLOCK) != 0) return SysError("fcntl");
  return absl::OkStatus();
}

// Waits until `fd` is ready for `events` or the deadline passes.
absl::Status WaitFor(int fd, short events, Deadline deadline, absl::string_view what) {
  for (;;) {
    pollfd p{fd, events, 0};
    const int n = poll(&p, 1, MillisLeft(deadline));
    if (n > 0) return absl::OkStatus();
    if (n < 0 && errno != EINTR) return SysError("poll");
    if (deadline.Expired()) return absl::DeadlineExceededError(absl::StrCat(what, " timed out"));
  }
}

// Writes or reads exactly `bytes` on a non-blocking socket before the deadline (bootstrap only).
absl::Status WriteAll(int fd, const void* data, size_t bytes, Deadline deadline,
                      absl::string_view what) {
  const char* p = static_cast<const char*>(data);
  while (bytes > 0) {
    const ssize_t n = send(fd, p, bytes, MSG_NOSIGNAL);
    if (n > 0) {
      p += n;
      bytes -= static_cast<size_t>(n);
    } else if (errno == EAGAIN || errno == EINTR) {
      LOOM_RETURN_IF_ERROR(WaitFor(fd, POLLOUT, deadline, what));
    } else {
      return SysError(what);
    }
  }
  return absl::OkStatus();
}
absl::Status ReadAll(int fd, void* data, size_t bytes, Deadline deadline, absl::string_view what) {
  char* p = static_cast<char*>(data);
  while (bytes > 0) {
    const ssize_t n = recv(fd, p, bytes, 0);
    if (n > 0) {
      p += n;
      bytes -= static_cast<size_t>(n);
    } else if (n == 0) {
      return absl::UnavailableError(absl::StrCat(what, ": the peer closed the connection"));
    } else if (errno == EAGAIN || errno == EINTR) {
      LOOM_RETURN_IF_ERROR(WaitFor(fd, POLLIN, deadline, what));
    } else {
      return SysError(what);
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<Fd> Connect(const Address& to, Deadline deadline, const std::string& what) {
  for (;;) {
    Fd fd(socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0));
    if (fd.get() < 0) return SysError("socket");
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = to.ip;
    a.sin_port = to.port;
    int rc = connect(fd.get(), reinterpret_cast<sockaddr*>(&a), sizeof(a));
    if (rc != 0 && errno == EINPROGRESS) {
      LOOM_RETURN_IF_ERROR(WaitFor(fd.get(), POLLOUT, deadline, what));
      socklen_t len = sizeof(rc);
      getsockopt(fd.get(), SOL_SOCKET, SO_ERROR, &rc, &len);
      errno = rc;
    }
    if (rc == 0) return fd;
    if (errno != ECONNREFUSED || deadline.Expired()) return SysError(what);
    usleep(10'000);  // the peer's listener is not there yet
  }
}

// One message being written: the header, then the bytes (borrowed, or the owned copy of a
// buffered send).
struct Outgoing {
  Header header;
  const char* data;
  std::vector<char> owned;
  size_t written = 0;  // of sizeof(Header) + header.bytes
  uint64_t seq = 0;    // per peer, in send order
};

// The message being read from a peer.
struct Incoming {
  Header header{};
  size_t header_read = 0;
  char* dst = nullptr;  // the receiver's buffer, or `owned` (kept for a later receive)
  std::vector<char> owned;
  size_t read = 0;
};

struct Peer {
  Fd fd;
  std::deque<Outgoing> out;
  uint64_t sent = 0;  // messages written completely
  uint64_t queued = 0;
  Incoming in;
  absl::flat_hash_map<int, std::deque<std::vector<char>>> kept;  // by tag, in arrival order
};

// The receive a SendRecv waits for.
struct Wanted {
  int tag;
  char* data;
  size_t bytes;
  bool done;
};

class SocketPointToPoint final : public PointToPoint {
 public:
  SocketPointToPoint(std::unique_ptr<PointToPoint> control, SocketOptions options,
                     std::vector<Peer> peers)
      : control_(std::move(control)), options_(std::move(options)), peers_(std::move(peers)) {}

  ~SocketPointToPoint() override {
    // Buffered sends still queued (a Send just before exit) are delivered if the peer reads them.
    const Deadline grace{Clock::now() + std::chrono::seconds(10)};
    for (int p = 0; p < size() && broken_.ok(); ++p) {
      while (!peers_[p].out.empty() && broken_.ok()) {
        if (!Flush(p).ok()) break;
        if (!peers_[p].out.empty() && !WaitFor(peers_[p].fd.get(), POLLOUT, grace, "flush").ok()) {
          break;
        }
      }
    }
  }

  int rank() const override { return control_->rank(); }
  int size() const override { return control_->size(); }

  absl::Status SendRecv(const void* send, size_t send_bytes, int dst, void* recv, size_t recv_bytes,
                        int src, int tag, Deadline deadline) override {
    if (!broken_.ok()) return broken_;
    LOOM_RETURN_IF_ERROR(CheckPeer(dst, "send to"));
    LOOM_RETURN_IF_ERROR(CheckPeer(src, "receive from"));
    if (tag < 0) return absl::InvalidArgumentError(absl::StrCat("tag must be >= 0, got ", tag));
    Wanted want{tag, static_cast<char*>(recv), recv_bytes, src == kNoPeer};
    if (!want.done) LOOM_RETURN_IF_ERROR(TakeKept(src, want));
    uint64_t mine = 0;
    if (dst != kNoPeer) mine = Queue(dst, send, send_bytes, tag, /*copy=*/false);
    auto sent = [&] { return dst == kNoPeer || peers_[dst].sent > mine; };
    std::vector<pollfd> fds;
    std::vector<int> who;
    auto spin_from = Clock::now();
    while (!(sent() && want.done)) {
      fds.clear();
      who.clear();
      for (int p = 0; p < size(); ++p) {
        short events = 0;
        if (!peers_[p].out.empty()) events |= POLLOUT;
        if (p == src && !want.done) events |= POLLIN;
        if (events != 0) {
          fds.push_back({peers_[p].fd.get(), events, 0});
          who.push_back(p);
        }
      }
      // A short spin first (small messages answer within microseconds; sleeping in poll costs a
      // wake-up each time), then block until something is ready.
      int n = poll(fds.data(), fds.size(), 0);
      if (n == 0 && Clock::now() - spin_from < kSpin) continue;
      if (n == 0) n = poll(fds.data(), fds.size(), MillisLeft(deadline, 100));
      if (n > 0) spin_from = Clock::now();
      if (n < 0 && errno != EINTR) return Break(SysError("poll"));
      for (size_t i = 0; n > 0 && i < fds.size(); ++i) {
        const int p = who[i];
        if (fds[i].revents & POLLIN) {
          absl::Status s = ReadFrom(p, want);
          if (!s.ok()) return Break(s);
        }
        if (fds[i].revents & (POLLOUT | POLLERR | POLLHUP)) {
          absl::Status s = Flush(p);
          if (!s.ok()) return Break(s);
        }
      }
      if (!(sent() && want.done) && deadline.Expired()) {
        const bool receiving = !want.done;
        return absl::DeadlineExceededError(absl::StrCat(
            "waiting for rank(s) ", receiving ? src : dst, " (", receiving ? "receive" : "send",
            ", tag ", tag, ", ", receiving ? recv_bytes : send_bytes, " bytes, socket)"));
      }
    }
    return absl::OkStatus();
  }

  absl::Status SendBuffered(const void* data, size_t bytes, int dst, int tag,
                            Deadline deadline) override {
    (void)deadline;
    if (!broken_.ok()) return broken_;
    LOOM_RETURN_IF_ERROR(CheckPeer(dst, "send to"));
    if (dst == kNoPeer) return absl::InvalidArgumentError("SendBuffered needs a destination");
    Queue(dst, data, bytes, tag, /*copy=*/true);
    absl::Status s = Flush(dst);  // as much as the socket takes now; the rest in later calls
    return s.ok() ? s : Break(s);
  }

  absl::StatusOr<std::unique_ptr<PointToPoint>> Split(const std::vector<int>& members,
                                                      Deadline deadline) override {
    LOOM_ASSIGN_OR_RETURN(std::unique_ptr<PointToPoint> child, control_->Split(members, deadline));
    return MakeSocketPointToPoint(std::move(child), options_, deadline);
  }

  void EnterCollective(uint64_t call) override { control_->EnterCollective(call); }
  std::vector<int> MissingRanks(uint64_t call) const override {
    return control_->MissingRanks(call);
  }
  [[noreturn]] void Abort(int exit_code) override {
    control_->Abort(exit_code);
    std::abort();  // not reached: the control transport's Abort does not return
  }

 private:
  absl::Status CheckPeer(int peer, absl::string_view what) const {
    if (peer == kNoPeer) return absl::OkStatus();
    if (peer < 0 || peer >= size() || peer == rank()) {
      return absl::InvalidArgumentError(
          absl::StrCat("cannot ", what, " rank ", peer, " (rank ", rank(), " of ", size(), ")"));
    }
    return absl::OkStatus();
  }

  absl::Status Break(absl::Status s) {
    broken_ = s;
    for (Peer& p : peers_) p.fd.Reset();
    return s;
  }

  uint64_t Queue(int dst, const void* data, size_t bytes, int tag, bool copy) {
    Peer& p = peers_[dst];
    Outgoing& o = p.out.emplace_back();
    o.header = Header{kMagic, tag, bytes};
    o.data = static_cast<const char*>(data);
    if (copy) {
      o.owned.assign(o.data, o.data + bytes);
      o.data = o.owned.data();
    }
    o.seq = p.queued++;
    return o.seq;
  }

  // Writes queued messages to `peer` until the socket would block or the queue is empty.
  absl::Status Flush(int peer) {
    Peer& p = peers_[peer];
    while (!p.out.empty()) {
      Outgoing& o = p.out.front();
      const size_t total = sizeof(Header) + o.header.bytes;
      iovec iov[2];
      int count = 0;
      if (o.written < sizeof(Header)) {
        iov[count++] = {reinterpret_cast<char*>(&o.header) + o.written, sizeof(Header) - o.written};
        if (o.header.bytes > 0) iov[count++] = {const_cast<char*>(o.data), o.header.bytes};
      } else {
        const size_t at = o.written - sizeof(Header);
        iov[count++] = {const_cast<char*>(o.data) + at, o.header.bytes - at};
      }
      msghdr m{};
      m.msg_iov = iov;
      m.msg_iovlen = count;
      const ssize_t n = sendmsg(p.fd.get(), &m, MSG_NOSIGNAL);
      if (n < 0) {
        if (errno == EAGAIN || errno == EINTR) return absl::OkStatus();
        return absl::UnavailableError(absl::StrCat("sending to rank ", peer, ": ",
                                                   std::strerror(errno), " (has it exited?)"));
      }
      o.written += static_cast<size_t>(n);
      if (o.written < total) continue;
      p.out.pop_front();
      ++p.sent;
    }
    return absl::OkStatus();
  }

  // A kept message of `want`'s tag from `src`, if one arrived earlier.
  absl::Status TakeKept(int src, Wanted& want) {
    auto it = peers_[src].kept.find(want.tag);
    if (it == peers_[src].kept.end() || it->second.empty()) return absl::OkStatus();
    std::vector<char>& m = it->second.front();
    LOOM_RETURN_IF_ERROR(CheckSize(src, want, m.size()));
    if (!m.empty()) std::memcpy(want.data, m.data(), m.size());
    it->second.pop_front();
    want.done = true;
    return absl::OkStatus();
  }

  absl::Status CheckSize(int src, const Wanted& want, uint64_t bytes) const {
    if (bytes == want.bytes) return absl::OkStatus();
    return absl::InvalidArgumentError(absl::StrCat("rank ", rank(), " expected ", want.bytes,
                                                   " bytes from rank ", src, " (tag ", want.tag,
                                                   ") but the message has ", bytes));
  }

  // Reads from `src` until the socket would block or `want` is complete; messages of other tags
  // are kept for later receives.
  absl::Status ReadFrom(int src, Wanted& want) {
    Peer& p = peers_[src];
    Incoming& in = p.in;
    while (!want.done) {
      if (in.header_read < sizeof(Header)) {
        const ssize_t n = recv(p.fd.get(), reinterpret_cast<char*>(&in.header) + in.header_read,
                               sizeof(Header) - in.header_read, 0);
        if (n <= 0) return ReadError(src, n);
        in.header_read += static_cast<size_t>(n);
        if (in.header_read < sizeof(Header)) continue;
        if (in.header.magic != kMagic) {
          return absl::DataLossError(absl::StrCat("a corrupt message header from rank ", src));
        }
        in.read = 0;
        if (in.header.tag == want.tag) {
          LOOM_RETURN_IF_ERROR(CheckSize(src, want, in.header.bytes));
          in.dst = want.data;
        } else {
          in.owned.resize(in.header.bytes);
          in.dst = in.owned.data();
        }
      }
      if (in.read < in.header.bytes) {
        const ssize_t n = recv(p.fd.get(), in.dst + in.read, in.header.bytes - in.read, 0);
        if (n <= 0) return ReadError(src, n);
        in.read += static_cast<size_t>(n);
        if (in.read < in.header.bytes) continue;
      }
      // A whole message.
      if (in.dst == want.data && in.header.tag == want.tag) {
        want.done = true;
      } else {
        p.kept[in.header.tag].push_back(std::move(in.owned));
      }
      in = Incoming{};
    }
    return absl::OkStatus();
  }

  // EAGAIN ends a read pass; end of stream or an error breaks the transport.
  absl::Status ReadError(int src, ssize_t n) {
    if (n < 0 && (errno == EAGAIN || errno == EINTR)) return absl::OkStatus();
    if (n == 0) {
      return absl::UnavailableError(
          absl::StrCat("rank ", src, " closed its connection (has it exited?)"));
    }
    return absl::UnavailableError(
        absl::StrCat("receiving from rank ", src, ": ", std::strerror(errno)));
  }

  std::unique_ptr<PointToPoint> control_;
  SocketOptions options_;
  std::vector<Peer> peers_;
  absl::Status broken_;
};

}  // namespace

SocketOptions SocketOptions::FromEnv() {
  SocketOptions o;
  o.ifname = base::GetEnv("LOOM_SOCKET_IFNAME").value_or("");
  return o;
}

absl::StatusOr<std::unique_ptr<PointToPoint>> MakeSocketPointToPoint(
    std::unique_ptr<PointToPoint> control, const SocketOptions& options, Deadline deadline) {
  const int n = control->size(), r = control->rank();
  LOOM_ASSIGN_OR_RETURN(const uint32_t ip, ChooseAddress(options.ifname));
  Fd listener(socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0));
  if (listener.get() < 0) return SysError("socket");
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = ip;
  socklen_t len = sizeof(a);
  if (bind(listener.get(), reinterpret_cast<sockaddr*>(&a), sizeof(a)) != 0) {
    return SysError(absl::StrCat("bind to ", Dotted(ip)));
  }
  if (listen(listener.get(), n) != 0) return SysError("listen");
  if (getsockname(listener.get(), reinterpret_cast<sockaddr*>(&a), &len) != 0) {
    return SysError("getsockname");
  }
  // Every rank's address, passed around the control transport's ring.
  std::vector<Address> all(n);
  all[r] = Address{ip, a.sin_port, 0};
  for (int k = 1; k < n; ++k) {
    LOOM_RETURN_IF_ERROR(control->SendRecv(&all[r], sizeof(Address), (r + k) % n,
                                           &all[(r + n - k) % n], sizeof(Address), (r + n - k) % n,
                                           kBootstrapTag, deadline));
  }
  // Each rank connects to the lower ranks and accepts the higher ones; a connection starts with
  // the connecting rank's number.
  std::vector<Peer> peers(n);
  for (int j = 0; j < r; ++j) {
    const std::string what =
        absl::StrCat("connecting to rank ", j, " at ", Dotted(all[j].ip), ":", ntohs(all[j].port));
    LOOM_ASSIGN_OR_RETURN(peers[j].fd, Connect(all[j], deadline, what));
    const Header hello{kMagic, r, 0};
    LOOM_RETURN_IF_ERROR(WriteAll(peers[j].fd.get(), &hello, sizeof(hello), deadline, what));
  }
  for (int accepted = 0; accepted < n - 1 - r; ++accepted) {
    const std::string what = absl::StrCat("rank ", r, " waiting for ", n - 1 - r - accepted,
                                          " higher rank(s) to connect");
    LOOM_RETURN_IF_ERROR(WaitFor(listener.get(), POLLIN, deadline, what));
    Fd fd(accept4(listener.get(), nullptr, nullptr, SOCK_NONBLOCK));
    if (fd.get() < 0) {
      if (errno == EAGAIN || errno == EINTR) {
        --accepted;
        continue;
      }
      return SysError("accept");
    }
    Header hello{};
    LOOM_RETURN_IF_ERROR(ReadAll(fd.get(), &hello, sizeof(hello), deadline, what));
    if (hello.magic != kMagic || hello.tag <= r || hello.tag >= n ||
        peers[hello.tag].fd.get() >= 0) {
      return absl::DataLossError(absl::StrCat(what, ": unexpected hello (rank ", hello.tag, ")"));
    }
    peers[hello.tag].fd = std::move(fd);
  }
  for (int j = 0; j < n; ++j) {
    if (j == r) continue;
    const int one = 1;
    setsockopt(peers[j].fd.get(), IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    LOOM_RETURN_IF_ERROR(SetNonBlocking(peers[j].fd.get()));
  }
  return std::unique_ptr<PointToPoint>(
      new SocketPointToPoint(std::move(control), options, std::move(peers)));
}

}  // namespace loom::comm
