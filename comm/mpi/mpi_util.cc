#include "comm/mpi/mpi_util.h"

#include <algorithm>
#include <cstring>
#include <thread>

#include "absl/strings/str_cat.h"
#include "comm/mpi/mpi_env.h"
#include "runtime/base/check.h"
#include "runtime/base/logging.h"
#include "runtime/base/status_macros.h"

namespace loom::comm::mpi_detail {

using runtime::DType;

absl::Status MpiStatus(int rc, absl::string_view call) {
  if (rc == MPI_SUCCESS) return absl::OkStatus();
  char text[MPI_MAX_ERROR_STRING];
  int length = 0;
  MPI_Error_string(rc, text, &length);
  return absl::InternalError(
      absl::StrCat(call, " failed: ", absl::string_view(text, static_cast<size_t>(length))));
}

bool MpiFinalized() {
  int finalized = 0;
  MPI_Finalized(&finalized);
  return finalized != 0;
}

std::unique_lock<std::mutex> LockMpi() {
  static MpiEnvironment* env = [] {
    absl::StatusOr<MpiEnvironment*> e = MpiEnvironment::Init();
    LOOM_CHECK(e.ok()) << e.status();
    return *e;
  }();
  return env->Lock();
}

MPI_Datatype MpiType(DType dtype) {
  switch (dtype) {
    case DType::kF32:
      return MPI_FLOAT;
    case DType::kBF16:
    case DType::kF16:
      return MPI_UINT16_T;
    case DType::kI32:
      return MPI_INT32_T;
    case DType::kI64:
      return MPI_INT64_T;
    default:
      LOOM_CHECK(false) << "no MPI type for " << dtype;
  }
  return MPI_BYTE;
}

MPI_Op MpiOp(ReduceOp op) {
  switch (op) {
    case ReduceOp::kSum:
    case ReduceOp::kAvg:
      return MPI_SUM;
    case ReduceOp::kMax:
      return MPI_MAX;
    case ReduceOp::kMin:
      return MPI_MIN;
  }
  return MPI_SUM;
}

SpinWait::Verdict WaitRequest(MPI_Request* request, MPI_Status* status, SpinWait& wait) {
  for (;;) {
    int done = 0;
    {
      std::unique_lock<std::mutex> lock = LockMpi();
      MPI_Test(request, &done, status == nullptr ? MPI_STATUS_IGNORE : status);
    }
    if (done) return SpinWait::kKeepWaiting;
    const SpinWait::Verdict v = wait.Pause();
    if (v != SpinWait::kKeepWaiting) return v;
  }
}

MpiMailbox::~MpiMailbox() {
  if (MpiFinalized()) return;
  const auto until = std::chrono::steady_clock::now() + std::chrono::seconds(1);
  while (!sends_.empty() && std::chrono::steady_clock::now() < until) {
    Reap();
    if (!sends_.empty()) std::this_thread::sleep_for(std::chrono::microseconds(100));
  }
  if (!sends_.empty()) {
    LOOM_LOG(WARNING) << sends_.size() << " sent message(s) were never received; their buffers "
                      << "stay allocated";
    for (InFlight& f : sends_) new std::vector<char>(std::move(f.buffer));  // leak on purpose
  }
}

void MpiMailbox::Reap() {
  for (auto it = sends_.begin(); it != sends_.end();) {
    int done = 0;
    {
      std::unique_lock<std::mutex> lock = LockMpi();
      MPI_Test(&it->request, &done, MPI_STATUS_IGNORE);
    }
    it = done ? sends_.erase(it) : std::next(it);
  }
}

namespace {

absl::Status CheckMessage(const CollectiveArgs& args, MPI_Comm comm, int64_t* bytes) {
  int tag_ub_flag = 0;
  int* tag_ub = nullptr;
  {
    std::unique_lock<std::mutex> lock = LockMpi();
    MPI_Comm_get_attr(comm, MPI_TAG_UB, &tag_ub, &tag_ub_flag);
  }
  const int max_tag = tag_ub_flag && tag_ub != nullptr ? *tag_ub : 32767;
  if (args.tag < 0 || args.tag > max_tag) {
    return absl::InvalidArgumentError(
        absl::StrCat("tag ", args.tag, " is outside MPI's range [0, ", max_tag, "]"));
  }
  *bytes = args.fp.count * static_cast<int64_t>(runtime::DTypeSize(args.fp.dtype));
  if (*bytes > INT32_MAX) {
    return absl::InvalidArgumentError(
        absl::StrCat("messages over MPI are limited to 2^31-1 bytes, this one has ", *bytes));
  }
  return absl::OkStatus();
}

}  // namespace

absl::Status MpiMailbox::Send(const CollectiveArgs& args) {
  Reap();
  int64_t bytes = 0;
  absl::Status s = CheckMessage(args, comm_, &bytes);
  if (!s.ok()) return s;
  InFlight& f = sends_.emplace_back();
  f.buffer.assign(static_cast<const char*>(args.in), static_cast<const char*>(args.in) + bytes);
  std::unique_lock<std::mutex> lock = LockMpi();
  s = MpiStatus(MPI_Isend(f.buffer.data(), static_cast<int>(bytes), MPI_BYTE, args.fp.root,
                          args.tag, comm_, &f.request),
                "MPI_Isend");
  lock.unlock();
  if (!s.ok()) sends_.pop_back();
  return s;
}

absl::Status MpiMailbox::Recv(const CollectiveArgs& args, Deadline deadline, bool oversubscribed) {
  Reap();
  int64_t bytes = 0;
  absl::Status s = CheckMessage(args, comm_, &bytes);
  if (!s.ok()) return s;
  // Match the message first (MPI_Improbe) so one of the wrong size is reported, not truncated.
  MPI_Status status;
  MPI_Message message = MPI_MESSAGE_NULL;
  SpinWait wait(deadline, std::nullopt, oversubscribed);
  for (;;) {
    int found = 0;
    {
      std::unique_lock<std::mutex> lock = LockMpi();
      s = MpiStatus(MPI_Improbe(args.fp.root, args.tag, comm_, &found, &message, &status),
                    "MPI_Improbe");
    }
    if (!s.ok()) return s;
    if (found) break;
    if (wait.Pause() != SpinWait::kKeepWaiting) {
      return absl::DeadlineExceededError(
          absl::StrCat("waiting for rank(s) ", args.fp.root, " (tag ", args.tag, ")"));
    }
  }
  int received = 0;
  MPI_Get_count(&status, MPI_BYTE, &received);
  if (received != bytes) {
    std::vector<char> discard(static_cast<size_t>(received));
    std::unique_lock<std::mutex> lock = LockMpi();
    MPI_Mrecv(discard.data(), received, MPI_BYTE, &message, MPI_STATUS_IGNORE);
    return absl::InvalidArgumentError(absl::StrCat("message from rank ", args.fp.root, " has ",
                                                   received, " bytes, the receive buffer ", bytes));
  }
  std::unique_lock<std::mutex> lock = LockMpi();
  return MpiStatus(
      MPI_Mrecv(args.out, static_cast<int>(bytes), MPI_BYTE, &message, MPI_STATUS_IGNORE),
      "MPI_Mrecv");
}

absl::StatusOr<int> MpiHostId(MPI_Comm comm, int ranks_per_host) {
  std::unique_lock<std::mutex> lock = LockMpi();
  int rank = 0;
  MPI_Comm_rank(comm, &rank);
  if (ranks_per_host > 0) return rank - rank % ranks_per_host;
  MPI_Comm node = MPI_COMM_NULL;
  LOOM_RETURN_IF_ERROR(
      MpiStatus(MPI_Comm_split_type(comm, MPI_COMM_TYPE_SHARED, rank, MPI_INFO_NULL, &node),
                "MPI_Comm_split_type"));
  int lowest = rank;
  const absl::Status s =
      MpiStatus(MPI_Allreduce(&rank, &lowest, 1, MPI_INT, MPI_MIN, node), "MPI_Allreduce");
  MPI_Comm_free(&node);
  if (!s.ok()) return s;
  return lowest;
}

absl::StatusOr<MPI_Comm> SplitMpiComm(MPI_Comm comm, const SplitPlan& plan) {
  MPI_Comm child = MPI_COMM_NULL;
  std::unique_lock<std::mutex> lock = LockMpi();
  const absl::Status s =
      MpiStatus(MPI_Comm_split(comm, *std::min_element(plan.members.begin(), plan.members.end()),
                               plan.rank, &child),
                "MPI_Comm_split");
  if (!s.ok()) return s;
  return child;
}

}  // namespace loom::comm::mpi_detail
