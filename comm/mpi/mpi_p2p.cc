#include "comm/mpi/mpi_p2p.h"

#include <mpi.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <iterator>
#include <list>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "comm/mpi/arrival_board.h"
#include "comm/mpi/mpi_env.h"
#include "comm/mpi/mpi_util.h"
#include "comm/spin_wait.h"
#include "runtime/base/logging.h"
#include "runtime/base/status_macros.h"

namespace loom::comm {
namespace {

using mpi_detail::LockMpi;
using mpi_detail::MpiStatus;

// MPI counts are int: larger messages travel as consecutive pieces of at most this many bytes
// (same source, destination and tag, so MPI matches them in order).
constexpr size_t kPiece = size_t{1} << 30;

size_t Pieces(size_t bytes) { return std::max<size_t>(1, (bytes + kPiece - 1) / kPiece); }

int PieceBytes(size_t bytes, size_t i) {
  return static_cast<int>(std::min(kPiece, bytes - std::min(bytes, i * kPiece)));
}

class MpiPointToPoint : public PointToPoint {
 public:
  // Takes ownership of `comm`. Call with the MPI lock not held.
  MpiPointToPoint(MPI_Comm comm, bool oversubscribed, std::unique_ptr<ArrivalBoard> board)
      : comm_(comm), oversubscribed_(oversubscribed), board_(std::move(board)) {
    std::unique_lock<std::mutex> lock = LockMpi();
    MPI_Comm_set_errhandler(comm_, MPI_ERRORS_RETURN);
    MPI_Comm_rank(comm_, &rank_);
    MPI_Comm_size(comm_, &size_);
    int flag = 0;
    int* tag_ub = nullptr;
    MPI_Comm_get_attr(MPI_COMM_WORLD, MPI_TAG_UB, &tag_ub, &flag);
    max_tag_ = flag && tag_ub != nullptr ? *tag_ub : 32767;
  }

  ~MpiPointToPoint() override {
    int finalized = 0;
    MPI_Finalized(&finalized);
    if (finalized) return;  // too late to free; MPI already released it
    // Buffered sends nobody received within a second keep their buffers: MPI may still read them.
    const auto until = std::chrono::steady_clock::now() + std::chrono::seconds(1);
    // After a failure their requests were released, so they are never reaped: keep them all.
    while (broken_.ok() && !buffered_.empty() && std::chrono::steady_clock::now() < until) {
      (void)Reap();
      if (!buffered_.empty()) std::this_thread::sleep_for(std::chrono::microseconds(100));
    }
    if (!buffered_.empty()) {
      LOOM_LOG(WARNING) << buffered_.size() << " buffered send(s) were never received; their "
                        << "buffers stay allocated";
      for (BufferedSend& b : buffered_)
        new std::vector<char>(std::move(b.data));  // leak on purpose
    }
    std::unique_lock<std::mutex> lock = LockMpi();
    MPI_Comm_free(&comm_);
  }

  int rank() const override { return rank_; }
  int size() const override { return size_; }

  absl::Status SendRecv(const void* send, size_t send_bytes, int dst, void* recv, size_t recv_bytes,
                        int src, int tag, Deadline deadline) override {
    if (!broken_.ok()) return broken_;
    LOOM_RETURN_IF_ERROR(Reap());
    LOOM_RETURN_IF_ERROR(CheckPeer(dst, "send to"));
    LOOM_RETURN_IF_ERROR(CheckPeer(src, "receive from"));
    LOOM_RETURN_IF_ERROR(CheckTag(tag));
    // Receives first, so a peer's eager message lands in the user buffer without a copy.
    std::vector<MPI_Request> recvs, sends;
    {
      std::unique_lock<std::mutex> lock = LockMpi();
      absl::Status s;
      for (size_t i = 0; src != kNoPeer && i < Pieces(recv_bytes) && s.ok(); ++i) {
        MPI_Request& req = recvs.emplace_back(MPI_REQUEST_NULL);
        s = MpiStatus(MPI_Irecv(static_cast<char*>(recv) + i * kPiece, PieceBytes(recv_bytes, i),
                                MPI_BYTE, src, tag, comm_, &req),
                      "MPI_Irecv");
      }
      for (size_t i = 0; dst != kNoPeer && i < Pieces(send_bytes) && s.ok(); ++i) {
        MPI_Request& req = sends.emplace_back(MPI_REQUEST_NULL);
        // MPI-3 takes a const buffer.
        s = MpiStatus(MPI_Isend(static_cast<const char*>(send) + i * kPiece,
                                PieceBytes(send_bytes, i), MPI_BYTE, dst, tag, comm_, &req),
                      "MPI_Isend");
      }
      if (!s.ok()) return Break(recvs, sends, s);
    }
    SpinWait wait(deadline, std::nullopt, oversubscribed_);
    size_t next_recv = 0, next_send = 0;  // pieces complete in order; test the first pending one
    for (;;) {
      bool progress = false;
      {
        std::unique_lock<std::mutex> lock = LockMpi();
        while (next_recv < recvs.size()) {
          int done = 0;
          MPI_Status status;
          const int rc = MPI_Test(&recvs[next_recv], &done, &status);
          if (rc != MPI_SUCCESS) {
            lock.unlock();
            return Break(recvs, sends, ReceiveError(rc, src, tag, recv_bytes));
          }
          if (!done) break;
          int got = 0;
          MPI_Get_count(&status, MPI_BYTE, &got);
          if (got != PieceBytes(recv_bytes, next_recv)) {
            lock.unlock();
            return Break(recvs, sends,
                         absl::InvalidArgumentError(absl::StrCat(
                             "the message from rank ", src, " (tag ", tag, ") is shorter than the ",
                             recv_bytes, " bytes the receive expects")));
          }
          ++next_recv;
          progress = true;
        }
        while (next_send < sends.size()) {
          int done = 0;
          const int rc = MPI_Test(&sends[next_send], &done, MPI_STATUS_IGNORE);
          if (rc != MPI_SUCCESS) {
            lock.unlock();
            return Break(recvs, sends, MpiStatus(rc, absl::StrCat("MPI_Isend to rank ", dst)));
          }
          if (!done) break;
          ++next_send;
          progress = true;
        }
      }
      if (next_recv == recvs.size() && next_send == sends.size()) return absl::OkStatus();
      if (progress) continue;
      if (wait.Pause() != SpinWait::kKeepWaiting) {
        std::vector<int> peers;
        std::vector<std::string> what;
        if (next_recv < recvs.size()) {
          peers.push_back(src);
          what.push_back(absl::StrCat("receive of ", recv_bytes, " bytes"));
        }
        if (next_send < sends.size()) {
          if (dst != src || peers.empty()) peers.push_back(dst);
          what.push_back(absl::StrCat("send of ", send_bytes, " bytes to be received"));
        }
        return Break(recvs, sends,
                     absl::DeadlineExceededError(
                         absl::StrCat("waiting for rank(s) ", absl::StrJoin(peers, ", "), " (",
                                      absl::StrJoin(what, ", "), ", tag ", tag, ")")));
      }
    }
  }

  absl::Status SendBuffered(const void* data, size_t bytes, int dst, int tag, Deadline) override {
    if (!broken_.ok()) return broken_;
    LOOM_RETURN_IF_ERROR(Reap());
    if (dst == kNoPeer) return absl::InvalidArgumentError("SendBuffered needs a destination");
    LOOM_RETURN_IF_ERROR(CheckPeer(dst, "send to"));
    LOOM_RETURN_IF_ERROR(CheckTag(tag));
    // A copy, so the caller may reuse `data` at once; MPI reads the copy until the peer receives.
    BufferedSend& b = buffered_.emplace_back();
    b.dst = dst;
    b.data.assign(static_cast<const char*>(data), static_cast<const char*>(data) + bytes);
    std::unique_lock<std::mutex> lock = LockMpi();
    for (size_t i = 0; i < Pieces(bytes); ++i) {
      MPI_Request& req = b.requests.emplace_back(MPI_REQUEST_NULL);
      const int rc = MPI_Isend(b.data.data() + i * kPiece, PieceBytes(bytes, i), MPI_BYTE, dst, tag,
                               comm_, &req);
      if (rc != MPI_SUCCESS) {
        lock.unlock();
        std::vector<MPI_Request> none;
        return Break(none, b.requests, MpiStatus(rc, absl::StrCat("MPI_Isend to rank ", dst)));
      }
    }
    return absl::OkStatus();
  }

  absl::StatusOr<std::unique_ptr<PointToPoint>> Split(const std::vector<int>& members,
                                                      Deadline) override {
    if (!broken_.ok()) return broken_;
    LOOM_RETURN_IF_ERROR(Reap());
    const auto self = std::find(members.begin(), members.end(), rank_);
    if (self == members.end()) {
      return absl::InvalidArgumentError(
          absl::StrCat("Split: rank ", rank_, " is not among the members of its own group"));
    }
    // Groups are disjoint, so their smallest member names each one.
    const int color = *std::min_element(members.begin(), members.end());
    const int key = static_cast<int>(self - members.begin());
    MPI_Comm child = MPI_COMM_NULL;
    {
      std::unique_lock<std::mutex> lock = LockMpi();
      LOOM_RETURN_IF_ERROR(MpiStatus(MPI_Comm_split(comm_, color, key, &child), "MPI_Comm_split"));
    }
    absl::StatusOr<std::unique_ptr<ArrivalBoard>> board = ArrivalBoard::Create(child);
    if (!board.ok()) {
      std::unique_lock<std::mutex> lock = LockMpi();
      MPI_Comm_free(&child);
      return board.status();
    }
    auto result =
        std::make_unique<MpiPointToPoint>(child, oversubscribed_, std::move(board).value());
    if (result->size() != static_cast<int>(members.size()) || result->rank() != key) {
      return absl::InternalError(absl::StrCat(
          "MPI_Comm_split gave rank ", result->rank(), " of ", result->size(), ", expected ", key,
          " of ", members.size(), ": ranks passed different member lists"));
    }
    return std::unique_ptr<PointToPoint>(std::move(result));
  }

  void EnterCollective(uint64_t call) override { board_->Enter(call); }
  std::vector<int> MissingRanks(uint64_t call) const override { return board_->Behind(call); }

  [[noreturn]] void Abort(int exit_code) override {
    MPI_Abort(MPI_COMM_WORLD, exit_code);
    std::abort();
  }

 private:
  absl::Status CheckPeer(int peer, absl::string_view what) const {
    if (peer == kNoPeer) return absl::OkStatus();
    if (peer < 0 || peer >= size_ || peer == rank_) {
      return absl::InvalidArgumentError(
          absl::StrCat("rank ", rank_, " cannot ", what, " rank ", peer, " in a group of ", size_));
    }
    return absl::OkStatus();
  }

  absl::Status CheckTag(int tag) const {
    if (tag < 0 || tag > max_tag_) {
      return absl::InvalidArgumentError(
          absl::StrCat("tag ", tag, " is outside MPI's range [0, ", max_tag_, "]"));
    }
    return absl::OkStatus();
  }

  // Releases the buffered sends that completed; the first failure breaks the transport.
  absl::Status Reap() {
    for (auto it = buffered_.begin(); it != buffered_.end();) {
      int done = 0;
      int rc = MPI_SUCCESS;
      {
        std::unique_lock<std::mutex> lock = LockMpi();
        rc = MPI_Testall(static_cast<int>(it->requests.size()), it->requests.data(), &done,
                         MPI_STATUSES_IGNORE);
      }
      if (rc != MPI_SUCCESS) {
        std::vector<MPI_Request> none;
        return Break(none, it->requests,
                     MpiStatus(rc, absl::StrCat("buffered MPI_Isend to rank ", it->dst)));
      }
      it = done ? buffered_.erase(it) : std::next(it);
    }
    return absl::OkStatus();
  }

  static absl::Status ReceiveError(int rc, int src, int tag, size_t bytes) {
    int error_class = 0;
    MPI_Error_class(rc, &error_class);
    if (error_class == MPI_ERR_TRUNCATE) {
      return absl::InvalidArgumentError(absl::StrCat("the message from rank ", src, " (tag ", tag,
                                                     ") is longer than the ", bytes,
                                                     " bytes the receive expects"));
    }
    return MpiStatus(rc, absl::StrCat("MPI_Irecv from rank ", src));
  }

  // Gives up on a call: pending receives are cancelled and completed (so MPI never writes into the
  // caller's buffer later), pending sends are cancelled and released. The transport stays broken.
  absl::Status Break(std::vector<MPI_Request>& recvs, std::vector<MPI_Request>& sends,
                     absl::Status error) {
    std::unique_lock<std::mutex> lock = LockMpi();
    for (MPI_Request& r : recvs) {
      if (r == MPI_REQUEST_NULL) continue;
      MPI_Cancel(&r);
      MPI_Wait(&r, MPI_STATUS_IGNORE);
    }
    for (MPI_Request& r : sends) {
      if (r == MPI_REQUEST_NULL) continue;
      MPI_Cancel(&r);
      MPI_Request_free(&r);
    }
    broken_ = absl::Status(error.code(),
                           absl::StrCat("the MPI transport is unusable after: ", error.message()));
    return error;
  }

  struct BufferedSend {
    int dst = 0;
    std::vector<char> data;
    std::vector<MPI_Request> requests;
  };

  MPI_Comm comm_;
  const bool oversubscribed_;
  std::unique_ptr<ArrivalBoard> board_;  // names ranks that have not entered a collective
  std::list<BufferedSend> buffered_;     // SendBuffered messages MPI may still read
  int rank_ = 0;
  int size_ = 1;
  int max_tag_ = 32767;
  absl::Status broken_;
};

}  // namespace

absl::StatusOr<std::unique_ptr<PointToPoint>> MakeMpiPointToPoint() {
  absl::StatusOr<MpiEnvironment*> env = MpiEnvironment::Init();
  if (!env.ok()) return env.status();
  int finalized = 0;
  MPI_Finalized(&finalized);
  if (finalized) return absl::FailedPreconditionError("MPI is already finalized");
  MPI_Comm comm = MPI_COMM_NULL;
  {
    std::unique_lock<std::mutex> lock = LockMpi();
    LOOM_RETURN_IF_ERROR(MpiStatus(MPI_Comm_dup(MPI_COMM_WORLD, &comm), "MPI_Comm_dup"));
  }
  absl::StatusOr<std::unique_ptr<ArrivalBoard>> board = ArrivalBoard::Create(comm);
  if (!board.ok()) {
    std::unique_lock<std::mutex> lock = LockMpi();
    MPI_Comm_free(&comm);
    return board.status();
  }
  const bool oversubscribed = SpinWait::Oversubscribed((*board)->local_size());
  return std::unique_ptr<PointToPoint>(
      new MpiPointToPoint(comm, oversubscribed, std::move(board).value()));
}

}  // namespace loom::comm
