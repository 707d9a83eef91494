#include "comm/mpi/mpi_backend.h"

#include <algorithm>
#include <climits>
#include <cstring>
#include <list>
#include <optional>
#include <vector>

#include "absl/strings/str_cat.h"
#include "comm/exchange.h"
#include "comm/mpi/arrival_board.h"
#include "comm/mpi/mpi_env.h"
#include "comm/mpi/mpi_util.h"
#include "runtime/base/check.h"
#include "runtime/base/logging.h"
#include "runtime/base/status_macros.h"

namespace loom::comm {
namespace {

using mpi_detail::LockMpi;
using mpi_detail::MpiOp;
using mpi_detail::MpiStatus;
using mpi_detail::MpiType;
using runtime::DType;

// One posted MPI operation and what to do once it completed. Scratch vectors keep their storage
// when the call is moved (pending, stranded), so `result` stays valid.
struct MpiCall {
  enum Finish { kNothing, kDivide, kFromScratch };
  uint64_t seq = 0;
  uint64_t collective = 0;  // this communicator's collective number (ArrivalBoard)
  MPI_Request request = MPI_REQUEST_NULL;
  Finish finish = kNothing;
  float* result = nullptr;  // kDivide: the f32 output; kFromScratch: the f32 scratch result
  int64_t count = 0;        // elements of the output
  bool avg = false;
  int divisor = 1;
  void* out = nullptr;
  DType dtype = DType::kF32;
  std::vector<float> scratch_in;  // f32 copies for 16-bit reductions
  std::vector<float> scratch_out;
  std::vector<char> bytes;  // a copy of the input of in-place all-to-all

  // A reduction's output (`fp.count` elements of `fp.dtype` at `out`) and how avg finishes it.
  void ExpectReduction(const Fingerprint& fp, void* out_buffer, int ranks) {
    count = fp.count;
    avg = fp.reduce == ReduceOp::kAvg;
    divisor = ranks;
    out = out_buffer;
    dtype = fp.dtype;
  }
};

// After completion: avg's division, and the rounding back to 16 bits.
void FinishCall(const MpiCall& c) {
  if (c.finish == MpiCall::kNothing) return;
  if (c.avg) {
    for (int64_t i = 0; i < c.count; ++i) c.result[i] /= static_cast<float>(c.divisor);
  }
  if (c.finish == MpiCall::kFromScratch) {
    runtime::ConvertBuffer(c.result, DType::kF32, c.out, c.dtype, c.count);
  }
}

bool IsHalf(DType d) { return d == DType::kBF16 || d == DType::kF16; }

absl::Status CheckIntCount(int64_t count, absl::string_view what) {
  if (count > INT_MAX) {
    return absl::InvalidArgumentError(absl::StrCat(
        what, " of ", count, " elements exceeds MPI's int count limit (2^31-1); split the call"));
  }
  return absl::OkStatus();
}

class MpiBackend : public Backend {
 public:
  MpiBackend(MPI_Comm comm, std::unique_ptr<ArrivalBoard> board)
      : comm_(comm),
        board_(std::move(board)),
        mailbox_(std::make_unique<mpi_detail::MpiMailbox>(comm)),
        oversubscribed_(SpinWait::Oversubscribed(board_->local_size())) {
    std::unique_lock<std::mutex> lock = LockMpi();
    MPI_Comm_rank(comm_, &rank_);
    MPI_Comm_size(comm_, &size_);
  }

  ~MpiBackend() override {
    mailbox_.reset();
    if (!stranded_.empty()) {
      // MPI cannot cancel a collective: the memory it may still write stays allocated.
      LOOM_LOG(WARNING) << stranded_.size()
                        << " timed-out MPI collective(s) never completed; their scratch "
                           "buffers stay allocated";
      for (MpiCall& c : stranded_) new MpiCall(std::move(c));
    }
    if (mpi_detail::MpiFinalized()) return;
    std::unique_lock<std::mutex> lock = LockMpi();
    MPI_Comm_free(&comm_);
  }

  int rank() const override { return rank_; }
  int size() const override { return size_; }
  std::string name() const override { return "mpi"; }

  absl::Status Run(const CollectiveArgs& args, Deadline deadline) override {
    if (args.fp.op == CollectiveOp::kSend) return mailbox_->Send(args);
    if (args.fp.op == CollectiveOp::kRecv) return mailbox_->Recv(args, deadline, oversubscribed_);
    MpiCall call;
    if (pending_.has_value() && pending_->seq == args.seq) {
      call = std::move(*pending_);
      pending_.reset();
    } else {
      if (args.fp.op == CollectiveOp::kAllToAllV) return AllToAllV(args, deadline);
      absl::Status s = Start(args, call);
      if (!s.ok()) return s;
    }
    SpinWait wait(deadline, std::nullopt, oversubscribed_);
    return Complete(call, wait);
  }

  std::optional<absl::Status> TryRunNow(const CollectiveArgs& args, Deadline deadline,
                                        std::chrono::nanoseconds patience) override {
    const CollectiveOp op = args.fp.op;
    if (op == CollectiveOp::kSend || op == CollectiveOp::kRecv || op == CollectiveOp::kAllToAllV) {
      return std::nullopt;
    }
    MpiCall call;
    absl::Status s = Start(args, call);
    if (!s.ok()) return s;
    SpinWait wait(deadline, std::chrono::steady_clock::now() + patience, oversubscribed_);
    const SpinWait::Verdict v = mpi_detail::WaitRequest(&call.request, nullptr, wait);
    if (v == SpinWait::kGaveUp) {
      pending_ = std::move(call);
      return std::nullopt;
    }
    if (v == SpinWait::kTimedOut) return TimedOut(std::move(call));
    FinishCall(call);
    return absl::OkStatus();
  }

  absl::StatusOr<std::unique_ptr<Backend>> Split(int color, int key, Deadline deadline) override {
    // The gather is bounded by the deadline: afterwards every rank is known to be here.
    absl::StatusOr<SplitPlan> planned =
        ExchangeSplitPlan(color, key, rank_, size_,
                          [&](const CollectiveArgs& gather) { return Run(gather, deadline); });
    if (!planned.ok()) return planned.status();
    const SplitPlan& plan = *planned;
    absl::StatusOr<MPI_Comm> split = mpi_detail::SplitMpiComm(comm_, plan);
    if (!split.ok()) return split.status();
    MPI_Comm child = *split;
    absl::StatusOr<std::unique_ptr<ArrivalBoard>> board = ArrivalBoard::Create(child);
    if (!board.ok()) return board.status();
    return std::unique_ptr<Backend>(new MpiBackend(child, std::move(board).value()));
  }

  [[noreturn]] void Abort(int exit_code) override {
    LOOM_LOG(ERROR) << "aborting the job: MPI_Abort(MPI_COMM_WORLD, " << exit_code << ")";
    MPI_Abort(MPI_COMM_WORLD, exit_code);
    std::abort();
  }

 private:
  // Posts the MPI operation of `a` into `call`.
  absl::Status Start(const CollectiveArgs& a, MpiCall& call) {
    const Fingerprint& fp = a.fp;
    call.seq = a.seq;
    call.collective = ++collectives_;
    board_->Enter(call.collective);
    const size_t es = runtime::DTypeSize(fp.dtype);
    const MPI_Datatype type = MpiType(fp.dtype);
    const int64_t n = size_;
    std::unique_lock<std::mutex> lock = LockMpi();
    switch (fp.op) {
      case CollectiveOp::kAllReduce: {
        LOOM_RETURN_IF_ERROR(CheckIntCount(fp.count, "AllReduce"));
        const int count = static_cast<int>(fp.count);
        call.ExpectReduction(fp, a.out, size_);
        if (IsHalf(fp.dtype)) {
          call.scratch_in.resize(fp.count);
          runtime::ConvertBuffer(a.in, fp.dtype, call.scratch_in.data(), DType::kF32, fp.count);
          call.finish = MpiCall::kFromScratch;
          call.result = call.scratch_in.data();
          return MpiStatus(MPI_Iallreduce(MPI_IN_PLACE, call.result, count, MPI_FLOAT,
                                          MpiOp(fp.reduce), comm_, &call.request),
                           "MPI_Iallreduce");
        }
        if (call.avg) {
          call.finish = MpiCall::kDivide;
          call.result = static_cast<float*>(a.out);
        }
        return MpiStatus(MPI_Iallreduce(a.in == a.out ? MPI_IN_PLACE : a.in, a.out, count, type,
                                        MpiOp(fp.reduce), comm_, &call.request),
                         "MPI_Iallreduce");
      }
      case CollectiveOp::kReduceScatter: {
        LOOM_RETURN_IF_ERROR(CheckIntCount(fp.count * n, "ReduceScatter input"));
        const int count = static_cast<int>(fp.count);
        call.ExpectReduction(fp, a.out, size_);
        if (IsHalf(fp.dtype)) {
          call.scratch_in.resize(fp.count * n);
          call.scratch_out.resize(fp.count);
          runtime::ConvertBuffer(a.in, fp.dtype, call.scratch_in.data(), DType::kF32, fp.count * n);
          call.finish = MpiCall::kFromScratch;
          call.result = call.scratch_out.data();
          return MpiStatus(
              MPI_Ireduce_scatter_block(call.scratch_in.data(), call.result, count, MPI_FLOAT,
                                        MpiOp(fp.reduce), comm_, &call.request),
              "MPI_Ireduce_scatter_block");
        }
        if (call.avg) {
          call.finish = MpiCall::kDivide;
          call.result = static_cast<float*>(a.out);
        }
        return MpiStatus(MPI_Ireduce_scatter_block(a.in, a.out, count, type, MpiOp(fp.reduce),
                                                   comm_, &call.request),
                         "MPI_Ireduce_scatter_block");
      }
      case CollectiveOp::kAllGather: {
        LOOM_RETURN_IF_ERROR(CheckIntCount(fp.count * n, "AllGather output"));
        const int count = static_cast<int>(fp.count);
        const bool in_place = a.in == static_cast<char*>(a.out) + rank_ * fp.count * es;
        return MpiStatus(MPI_Iallgather(in_place ? MPI_IN_PLACE : a.in, count, type, a.out, count,
                                        type, comm_, &call.request),
                         "MPI_Iallgather");
      }
      case CollectiveOp::kAllToAll: {
        LOOM_RETURN_IF_ERROR(CheckIntCount(fp.count * n, "AllToAll"));
        const void* in = a.in;
        if (a.in == a.out && fp.count > 0) {
          call.bytes.assign(static_cast<const char*>(a.in),
                            static_cast<const char*>(a.in) + fp.count * n * es);
          in = call.bytes.data();
        }
        const int count = static_cast<int>(fp.count);
        return MpiStatus(MPI_Ialltoall(in, count, type, a.out, count, type, comm_, &call.request),
                         "MPI_Ialltoall");
      }
      case CollectiveOp::kBroadcast: {
        LOOM_RETURN_IF_ERROR(CheckIntCount(fp.count, "Broadcast"));
        return MpiStatus(
            MPI_Ibcast(a.out, static_cast<int>(fp.count), type, fp.root, comm_, &call.request),
            "MPI_Ibcast");
      }
      case CollectiveOp::kBarrier:
        return MpiStatus(MPI_Ibarrier(comm_, &call.request), "MPI_Ibarrier");
      default:
        return absl::InternalError(absl::StrCat("mpi backend cannot start ", fp.ToString()));
    }
  }

  absl::Status Complete(MpiCall& call, SpinWait& wait) {
    if (mpi_detail::WaitRequest(&call.request, nullptr, wait) != SpinWait::kKeepWaiting) {
      return TimedOut(std::move(call));
    }
    FinishCall(call);
    return absl::OkStatus();
  }

  absl::Status TimedOut(MpiCall call) {
    const uint64_t collective = call.collective;
    stranded_.push_back(std::move(call));  // MPI may still use its buffers
    return absl::DeadlineExceededError(board_->Describe(collective));
  }

  // AllToAllV: the per-peer counts travel first (MPI_Ialltoall), so a disagreement is reported
  // instead of truncating; then MPI_Ialltoallv.
  absl::Status AllToAllV(const CollectiveArgs& a, Deadline deadline) {
    const int n = size_;
    const size_t es = runtime::DTypeSize(a.fp.dtype);
    SpinWait wait(deadline, std::nullopt, oversubscribed_);
    MpiCall counts_call;
    counts_call.seq = a.seq;
    counts_call.collective = ++collectives_;
    board_->Enter(counts_call.collective);
    std::vector<int64_t> incoming(static_cast<size_t>(n));
    {
      std::unique_lock<std::mutex> lock = LockMpi();
      LOOM_RETURN_IF_ERROR(
          MpiStatus(MPI_Ialltoall(a.send_counts.data(), 1, MPI_INT64_T, incoming.data(), 1,
                                  MPI_INT64_T, comm_, &counts_call.request),
                    "MPI_Ialltoall"));
    }
    LOOM_RETURN_IF_ERROR(Complete(counts_call, wait));
    std::vector<int> send(n), recv(n), sdispl(n), rdispl(n);
    int64_t sent = 0, received = 0;
    for (int r = 0; r < n; ++r) {
      if (incoming[r] != a.recv_counts[r]) {
        return absl::InvalidArgumentError(absl::StrCat(
            "rank ", r, " sends ", incoming[r], " elements to rank ", rank_, " but rank ", rank_,
            " expects ", a.recv_counts[r], " (recv_counts[", r, "])"));
      }
      LOOM_RETURN_IF_ERROR(CheckIntCount(
          std::max(sent, received) + std::max(a.send_counts[r], a.recv_counts[r]), "AllToAllV"));
      send[r] = static_cast<int>(a.send_counts[r]);
      recv[r] = static_cast<int>(a.recv_counts[r]);
      sdispl[r] = static_cast<int>(sent);
      rdispl[r] = static_cast<int>(received);
      sent += a.send_counts[r];
      received += a.recv_counts[r];
    }
    MpiCall call;
    call.seq = a.seq;
    call.collective = ++collectives_;
    board_->Enter(call.collective);
    const void* in = a.in;
    if (a.in == a.out && sent > 0) {
      call.bytes.assign(static_cast<const char*>(a.in), static_cast<const char*>(a.in) + sent * es);
      in = call.bytes.data();
    }
    const MPI_Datatype type = MpiType(a.fp.dtype);
    {
      std::unique_lock<std::mutex> lock = LockMpi();
      LOOM_RETURN_IF_ERROR(
          MpiStatus(MPI_Ialltoallv(in, send.data(), sdispl.data(), type, a.out, recv.data(),
                                   rdispl.data(), type, comm_, &call.request),
                    "MPI_Ialltoallv"));
    }
    return Complete(call, wait);
  }

  MPI_Comm comm_;
  std::unique_ptr<ArrivalBoard> board_;
  std::unique_ptr<mpi_detail::MpiMailbox> mailbox_;
  bool oversubscribed_ = false;
  int rank_ = 0;
  int size_ = 1;
  uint64_t collectives_ = 0;
  std::optional<MpiCall> pending_;
  std::list<MpiCall> stranded_;
};

}  // namespace

absl::StatusOr<std::unique_ptr<Backend>> MakeMpiWorldBackend() {
  absl::StatusOr<MpiEnvironment*> env = MpiEnvironment::Init();
  if (!env.ok()) return env.status();
  MPI_Comm world = MPI_COMM_NULL;
  {
    std::unique_lock<std::mutex> lock = LockMpi();
    absl::Status s = MpiStatus(MPI_Comm_dup(MPI_COMM_WORLD, &world), "MPI_Comm_dup");
    if (!s.ok()) return s;
  }
  absl::StatusOr<std::unique_ptr<ArrivalBoard>> board = ArrivalBoard::Create(world);
  if (!board.ok()) return board.status();
  return std::unique_ptr<Backend>(new MpiBackend(world, std::move(board).value()));
}

}  // namespace loom::comm
