#include "comm/communicator.h"

#include <algorithm>
#include <cstdlib>
#include <optional>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "comm/reduce.h"
#include "runtime/base/check.h"
#include "runtime/base/env.h"
#include "runtime/base/logging.h"
#include "runtime/base/status_macros.h"

namespace loom::comm {

using runtime::DType;
using runtime::Tensor;

absl::Status NameMissingRanks(const absl::Status& status, const std::vector<int>& missing) {
  if (status.code() != absl::StatusCode::kDeadlineExceeded || missing.empty()) return status;
  return absl::DeadlineExceededError(
      absl::StrCat("waiting for rank(s) ", absl::StrJoin(missing, ", "),
                   " (they have not entered this collective; blocked on: ", status.message(), ")"));
}

void Backend::Abort(int exit_code) {
  LOOM_LOG(ERROR) << "aborting the job (exit code " << exit_code << ")";
  std::abort();
}

CommOptions CommOptions::FromEnv() {
  CommOptions o;
  const absl::StatusOr<int64_t> timeout = base::GetEnvInt("LOOM_COMM_TIMEOUT_S", 0);
  if (timeout.ok() && *timeout > 0) o.timeout = absl::Seconds(*timeout);
  if (!timeout.ok()) LOOM_LOG(WARNING) << timeout.status().message();
  o.check_fingerprints = base::GetEnvBool("LOOM_DEBUG_COLLECTIVES", false).value_or(false);
  for (auto [name, limit] :
       {std::pair{"LOOM_COMM_INLINE_BYTES", &o.inline_max_bytes},
        std::pair{"LOOM_COMM_INLINE_EXCHANGE_BYTES", &o.inline_exchange_max_bytes}}) {
    const absl::StatusOr<int64_t> bytes = base::GetEnvInt(name, *limit);
    if (bytes.ok()) *limit = *bytes;
    if (!bytes.ok()) LOOM_LOG(WARNING) << bytes.status().message();
  }
  return o;
}

namespace {

absl::Status Invalid(const Fingerprint& fp, absl::string_view what) {
  return absl::InvalidArgumentError(absl::StrCat(fp.ToString(), ": ", what));
}

// Where a defined tensor's first element is, host or device.
const void* Address(const Tensor& t) {
  return t.device() != runtime::Device::kCpu ? t.device_data() : t.raw_data();
}

// The address of a tensor's data in `memory` (the backend's); nullptr for an undefined one
// (CheckTensor reports it). Tensors elsewhere never get here: the collectives stage them first.
void* BufferData(const Tensor& t, runtime::Device memory) {
  return t.defined() && t.device() == memory ? const_cast<void*>(Address(t)) : nullptr;
}

absl::Status CheckTensor(const Fingerprint& fp, const Tensor& t, absl::string_view name,
                         runtime::Device memory) {
  if (!t.defined()) return Invalid(fp, absl::StrCat(name, " is undefined"));
  if (t.device() != memory) {
    return Invalid(
        fp, absl::StrCat(name, " is not in ", memory == runtime::Device::kCpu ? "host" : "device",
                         " memory, where this backend's buffers are"));
  }
  if (t.dtype() != fp.dtype) {
    return Invalid(fp, absl::StrCat(name, " is ", t.DebugString(), ", expected ",
                                    runtime::DTypeName(fp.dtype)));
  }
  if (!IsCommDType(t.dtype())) return CheckReducible(t.dtype(), ReduceOp::kSum);
  return absl::OkStatus();
}

absl::Status CheckCount(const Fingerprint& fp, const Tensor& t, absl::string_view name,
                        int64_t expected) {
  if (t.numel() != expected) {
    return Invalid(fp, absl::StrCat(name, " has ", t.numel(), " elements (", t.DebugString(),
                                    "), expected ", expected));
  }
  return absl::OkStatus();
}

absl::Status CheckPeer(const Fingerprint& fp, int peer, int size, int self) {
  if (peer < 0 || peer >= size) {
    return Invalid(fp, absl::StrCat("rank ", peer, " is outside [0, ", size, ")"));
  }
  if ((fp.op == CollectiveOp::kSend || fp.op == CollectiveOp::kRecv) && peer == self) {
    return Invalid(fp, "a rank cannot send to or receive from itself");
  }
  return absl::OkStatus();
}

// Runs `checks` in order and returns the first error.
absl::Status FirstError(std::initializer_list<absl::Status> checks) {
  for (const absl::Status& s : checks) {
    if (!s.ok()) return s;
  }
  return absl::OkStatus();
}

}  // namespace

Communicator::Communicator(std::unique_ptr<Backend> backend, CommOptions options)
    : backend_(std::move(backend)),
      options_(options),
      rank_(backend_->rank()),
      size_(backend_->size()),
      backend_name_(backend_->name()),
      memory_(backend_->memory()) {
  // Log lines from the progress thread carry the creating thread's rank (the process rank under
  // mpirun, the thread-rank in tests), else this communicator's rank.
  const int creator = base::CurrentRank();
  progress_ = std::thread([this, creator] {
    base::SetThreadRank(creator >= 0 ? creator : rank_);
    ProgressLoop();
  });
}

Communicator::~Communicator() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stopping_ = true;
  }
  cv_.notify_all();
  progress_.join();
}

Deadline Communicator::NextDeadline() const {
  return {std::chrono::steady_clock::now() + absl::ToChronoNanoseconds(options_.timeout)};
}

void Communicator::RecordLocked(const Task& task, const char* state) {
  history_.push_back({task.args.seq, task.args.fp, task.custom ? task.label : nullptr, state});
  while (static_cast<int>(history_.size()) > options_.history) history_.pop_front();
}

void Communicator::Record(const Task& task, const char* state) {
  std::lock_guard<std::mutex> lock(mu_);
  RecordLocked(task, state);
}

std::vector<std::string> Communicator::History() const {
  std::lock_guard<std::mutex> lock(mu_);
  std::vector<std::string> lines;
  lines.reserve(history_.size());
  for (const HistoryEntry& e : history_) {
    lines.push_back(absl::StrCat("#", e.seq, " ", e.custom != nullptr ? e.custom : e.fp.ToString(),
                                 ": ", e.state));
  }
  return lines;
}

absl::Status Communicator::poison() const {
  std::lock_guard<std::mutex> lock(mu_);
  return poison_;
}

int64_t Communicator::LargestBuffer(const CollectiveArgs& args) const {
  const int64_t es = static_cast<int64_t>(runtime::DTypeSize(args.fp.dtype));
  switch (args.fp.op) {
    case CollectiveOp::kReduceScatter:
    case CollectiveOp::kAllGather:
    case CollectiveOp::kAllToAll:
      return args.fp.count * size_ * es;
    case CollectiveOp::kAllToAllV: {
      int64_t received = 0;
      for (int64_t c : args.recv_counts) received += c;
      return std::max(args.fp.count, received) * es;
    }
    default:
      return args.fp.count * es;
  }
}

std::shared_ptr<Work> Communicator::EnqueueTask(Task task, int64_t bytes) {
  task.work = std::make_shared<Work>();
  std::shared_ptr<Work> work = task.work;
  bool run_inline = false;
  absl::Status poisoned;
  {
    std::lock_guard<std::mutex> lock(mu_);
    task.args.seq = next_seq_++;
    if (!task.custom) backend_->Issued(task.args);
    // The fast path keeps the order: nothing is queued or running, and `busy_` holds the progress
    // thread back until this call finished or was queued at the front.
    const int64_t limit = task.args.fp.op == CollectiveOp::kAllToAllV
                              ? options_.inline_exchange_max_bytes
                              : options_.inline_max_bytes;
    run_inline = bytes >= 0 && bytes <= limit && !options_.check_fingerprints && queue_.empty() &&
                 !busy_ && !stopping_;
    if (run_inline) {
      busy_ = true;
      poisoned = poison_;
      if (poisoned.ok()) RecordLocked(task, "started");
    } else {
      queue_.push_back(std::move(task));
    }
  }
  if (!run_inline) {
    cv_.notify_one();
    return work;
  }
  RunInline(task, poisoned);
  return work;
}

void Communicator::RunInline(Task& task, const absl::Status& poisoned) {
  if (!poisoned.ok()) {
    SkipPoisoned(task, poisoned);
  } else {
    std::optional<absl::Status> status = backend_->TryRunNow(
        task.args, NextDeadline(), absl::ToChronoNanoseconds(options_.inline_patience));
    if (status.has_value() && status->ok()) {
      // The common case, kept short: one lock for the history and the hand-back, and the Work
      // completed before anyone else can see it.
      bool wake = false;
      {
        std::lock_guard<std::mutex> lock(mu_);
        RecordLocked(task, "done");
        busy_ = false;
        wake = !queue_.empty() || stopping_;
      }
      task.work->CompleteUnshared(absl::OkStatus());
      if (wake) cv_.notify_one();
      return;
    }
    if (status.has_value()) {
      FinishTask(task, *std::move(status));
    } else {
      task.resumed = true;
      std::lock_guard<std::mutex> lock(mu_);
      queue_.push_front(std::move(task));  // every call queued meanwhile has a later seq
    }
  }
  bool wake = false;
  {
    std::lock_guard<std::mutex> lock(mu_);
    busy_ = false;
    wake = !queue_.empty() || stopping_;
  }
  // Only when there is work: waking an idle progress thread would cost a context switch per call.
  if (wake) cv_.notify_one();
}

std::shared_ptr<Work> Communicator::StagedCollective(const Fingerprint& fp, const Tensor& in,
                                                     Tensor& out, const StagedCall& call) {
  Task task;
  task.args.fp = fp;
  const bool p2p = fp.op == CollectiveOp::kSend || fp.op == CollectiveOp::kRecv;
  if (size_ == 1 && !p2p) {
    if (!in.defined() || !out.defined() || in.dtype() != out.dtype() || in.numel() != out.numel()) {
      return Enqueue(
          std::move(task.args),
          Invalid(fp, absl::StrCat("one rank's result is its input: in ", in.DebugString(),
                                   " and out ", out.DebugString(), " must match")));
    }
    // A copy in the group's order (after the calls queued before it); nothing when in place.
    task.label = "staging copy";
    task.custom = [in, out](Deadline) mutable {
      if (Address(in) != Address(out)) out.CopyFrom(in);
      return absl::OkStatus();
    };
    return EnqueueTask(std::move(task));
  }
  runtime::Allocator* staging = backend_->staging_allocator();
  const bool in_place = in.defined() && out.defined() && Address(in) == Address(out);
  Tensor staged_in = in.defined() ? in.Clone(staging) : Tensor();
  Tensor staged_out = in_place        ? staged_in
                      : out.defined() ? Tensor::Empty(out.shape(), out.dtype(), out.tag(), staging)
                                      : Tensor();
  std::shared_ptr<Work> staged = call(staged_in, staged_out);
  // Refused before it was queued (bad arguments): nothing to copy back.
  if (staged->Test() && !staged->status().ok()) return staged;
  // Queued after the staged call, so it runs once that is done: the result to the caller's memory.
  task.label = "staging";
  // The staged buffers live until then: the backend may read and write them until the call is
  // done.
  task.custom = [staged, staged_in, staged_out, out](Deadline) mutable {
    LOOM_RETURN_IF_ERROR(staged->Wait());
    if (out.defined()) out.CopyFrom(staged_out);
    return absl::OkStatus();
  };
  return EnqueueTask(std::move(task));
}

std::shared_ptr<Work> Communicator::Enqueue(CollectiveArgs args, absl::Status validation) {
  if (!validation.ok()) {
    // Nothing was sent: the caller's mistake is reported without poisoning the communicator.
    auto work = std::make_shared<Work>();
    work->Complete(std::move(validation));
    return work;
  }
  const int64_t bytes = LargestBuffer(args);
  return EnqueueTask(Task{std::move(args), nullptr, nullptr}, bytes);
}

void Communicator::ProgressLoop() {
  for (;;) {
    Task task;
    {
      std::unique_lock<std::mutex> lock(mu_);
      // Idle ranks sleep on the condition variable: no polling, no CPU.
      cv_.wait(lock, [this] { return !busy_ && (stopping_ || !queue_.empty()); });
      if (queue_.empty()) return;  // stopping and drained
      task = std::move(queue_.front());
      queue_.pop_front();
      busy_ = true;
    }
    RunTask(task);
    {
      std::lock_guard<std::mutex> lock(mu_);
      busy_ = false;
    }
  }
}

void Communicator::RunTask(Task& task) {
  if (task.resumed) {
    FinishTask(task, backend_->Run(task.args, NextDeadline()));
    return;
  }
  const absl::Status poisoned = poison();
  if (!poisoned.ok()) {
    SkipPoisoned(task, poisoned);
    return;
  }
  Record(task, "started");
  const Deadline deadline = NextDeadline();
  absl::Status status;
  if (task.custom) {
    status = task.custom(deadline);
  } else {
    // Point-to-point calls involve two ranks, not the group: nothing to compare across it.
    const bool p2p =
        task.args.fp.op == CollectiveOp::kSend || task.args.fp.op == CollectiveOp::kRecv;
    if (options_.check_fingerprints && !p2p) status = CheckFingerprints(task.args, deadline);
    if (status.ok()) status = backend_->Run(task.args, deadline);
  }
  FinishTask(task, std::move(status));
}

void Communicator::SkipPoisoned(Task& task, const absl::Status& poisoned) {
  if (!task.custom) backend_->Abandoned(task.args);
  Record(task, "skipped (poisoned)");
  task.work->Complete(absl::Status(
      poisoned.code(),
      absl::StrCat("communicator is poisoned by an earlier error: ", poisoned.message())));
}

// Completes `task` with the status its run returned; an error poisons the communicator.
void Communicator::FinishTask(Task& task, absl::Status status) {
  const uint64_t seq = task.args.seq;
  if (!status.ok()) {
    const std::string what = task.custom ? task.label : task.args.fp.ToString();
    status = absl::Status(
        status.code(),
        absl::StrCat(
            what, " #", seq, " on rank ", rank_, " of ", size_, " (", backend_name_,
            status.code() == absl::StatusCode::kDeadlineExceeded
                ? absl::StrCat(") timed out after ", absl::FormatDuration(options_.timeout), ": ")
                : ") failed: ",
            status.message()));
    Record(task, "failed");
    Fail(status);
  } else {
    Record(task, "done");
  }
  task.work->Complete(status);
}

void Communicator::Fail(const absl::Status& error) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    poison_ = error;
  }
  LOOM_LOG(ERROR) << error.message();
  LOOM_LOG(ERROR) << "last collectives on this communicator, oldest first:";
  for (const std::string& line : History()) LOOM_LOG(ERROR) << "  " << line;
  if (options_.abort_on_error) backend_->Abort(1);
}

absl::Status Communicator::CheckFingerprints(const CollectiveArgs& args, Deadline deadline) {
  constexpr int kWords = 5;
  const Fingerprint& fp = args.fp;
  const int64_t mine[kWords] = {static_cast<int64_t>(fp.op), static_cast<int64_t>(fp.dtype),
                                fp.count, static_cast<int64_t>(fp.reduce), fp.root};
  std::vector<int64_t> all(static_cast<size_t>(kWords * size_));
  CollectiveArgs gather;
  gather.fp = {CollectiveOp::kAllGather, DType::kI64, kWords};
  gather.seq = args.seq;
  gather.in = mine;
  gather.out = all.data();
  absl::Status s = backend_->RunOnHost(gather, deadline);
  if (!s.ok()) return s;
  bool same = true;
  std::vector<std::string> per_rank;
  for (int r = 0; r < size_; ++r) {
    const int64_t* w = all.data() + r * kWords;
    Fingerprint other{static_cast<CollectiveOp>(w[0]), static_cast<DType>(w[1]), w[2],
                      static_cast<ReduceOp>(w[3]), static_cast<int>(w[4])};
    // AllToAllV ranks legitimately send different totals.
    if (fp.op == CollectiveOp::kAllToAllV && other.op == fp.op) other.count = fp.count;
    same = same && other == fp;
    per_rank.push_back(
        absl::StrCat("rank ", r, " ",
                     Fingerprint{static_cast<CollectiveOp>(w[0]), static_cast<DType>(w[1]), w[2],
                                 static_cast<ReduceOp>(w[3]), static_cast<int>(w[4])}
                         .ToString()));
  }
  if (same) return absl::OkStatus();
  return absl::FailedPreconditionError(
      absl::StrCat("ranks called different collectives (LOOM_DEBUG_COLLECTIVES): ",
                   absl::StrJoin(per_rank, "; ")));
}

std::shared_ptr<Work> Communicator::AllReduce(const Tensor& in, Tensor& out, ReduceOp op) {
  if (Misplaced(in) || Misplaced(out)) {
    return StagedCollective({CollectiveOp::kAllReduce, in.dtype(), in.numel(), op}, in, out,
                            [&](const Tensor& i, Tensor& o) { return AllReduce(i, o, op); });
  }
  CollectiveArgs a;
  a.fp = {CollectiveOp::kAllReduce, in.dtype(), in.numel(), op};
  a.in = BufferData(in, memory_);
  a.out = BufferData(out, memory_);
  const absl::Status v =
      FirstError({CheckTensor(a.fp, in, "in", memory_), CheckTensor(a.fp, out, "out", memory_),
                  CheckReducible(in.dtype(), op), CheckCount(a.fp, out, "out", in.numel())});
  return Enqueue(std::move(a), v);
}

std::shared_ptr<Work> Communicator::ReduceScatter(const Tensor& in, Tensor& out, ReduceOp op) {
  if (Misplaced(in) || Misplaced(out)) {
    return StagedCollective({CollectiveOp::kReduceScatter, in.dtype(), out.numel(), op}, in, out,
                            [&](const Tensor& i, Tensor& o) { return ReduceScatter(i, o, op); });
  }
  CollectiveArgs a;
  a.fp = {CollectiveOp::kReduceScatter, in.dtype(), out.numel(), op};
  a.in = BufferData(in, memory_);
  a.out = BufferData(out, memory_);
  const absl::Status v =
      FirstError({CheckTensor(a.fp, in, "in", memory_), CheckTensor(a.fp, out, "out", memory_),
                  CheckReducible(in.dtype(), op), CheckCount(a.fp, in, "in", out.numel() * size_)});
  return Enqueue(std::move(a), v);
}

std::shared_ptr<Work> Communicator::AllGather(const Tensor& in, Tensor& out) {
  if (Misplaced(in) || Misplaced(out)) {
    return StagedCollective({CollectiveOp::kAllGather, in.dtype(), in.numel()}, in, out,
                            [&](const Tensor& i, Tensor& o) { return AllGather(i, o); });
  }
  CollectiveArgs a;
  a.fp = {CollectiveOp::kAllGather, in.dtype(), in.numel()};
  a.in = BufferData(in, memory_);
  a.out = BufferData(out, memory_);
  const absl::Status v =
      FirstError({CheckTensor(a.fp, in, "in", memory_), CheckTensor(a.fp, out, "out", memory_),
                  CheckCount(a.fp, out, "out", in.numel() * size_)});
  return Enqueue(std::move(a), v);
}

std::shared_ptr<Work> Communicator::AllToAll(const Tensor& in, Tensor& out) {
  if (Misplaced(in) || Misplaced(out)) {
    return StagedCollective({CollectiveOp::kAllToAll, in.dtype(), in.numel()}, in, out,
                            [&](const Tensor& i, Tensor& o) { return AllToAll(i, o); });
  }
  CollectiveArgs a;
  a.fp = {CollectiveOp::kAllToAll, in.dtype(), in.numel() / size_};
  a.in = BufferData(in, memory_);
  a.out = BufferData(out, memory_);
  absl::Status divisible =
      in.numel() % size_ == 0
          ? absl::OkStatus()
          : Invalid(a.fp, absl::StrCat("in has ", in.numel(), " elements, not a multiple of ",
                                       size_, " ranks"));
  const absl::Status v =
      FirstError({CheckTensor(a.fp, in, "in", memory_), CheckTensor(a.fp, out, "out", memory_),
                  divisible, CheckCount(a.fp, out, "out", in.numel())});
  return Enqueue(std::move(a), v);
}

std::shared_ptr<Work> Communicator::AllToAllV(const Tensor& in,
                                              absl::Span<const int64_t> send_counts, Tensor& out,
                                              absl::Span<const int64_t> recv_counts) {
  if (Misplaced(in) || Misplaced(out)) {
    return StagedCollective(
        {CollectiveOp::kAllToAllV, in.dtype(), in.numel()}, in, out,
        [&](const Tensor& i, Tensor& o) { return AllToAllV(i, send_counts, o, recv_counts); });
  }
  CollectiveArgs a;
  a.fp = {CollectiveOp::kAllToAllV, in.dtype(), in.numel()};
  a.in = BufferData(in, memory_);
  a.out = BufferData(out, memory_);
  a.send_counts.assign(send_counts.begin(), send_counts.end());
  a.recv_counts.assign(recv_counts.begin(), recv_counts.end());
  absl::Status counts = absl::OkStatus();
  int64_t sent = 0, received = 0;
  for (int64_t c : send_counts) sent += c;
  for (int64_t c : recv_counts) received += c;
  if (static_cast<int>(send_counts.size()) != size_ ||
      static_cast<int>(recv_counts.size()) != size_) {
    counts =
        Invalid(a.fp, absl::StrCat("send_counts and recv_counts need one entry per rank (", size_,
                                   "), got ", send_counts.size(), " and ", recv_counts.size()));
  }
  const absl::Status v =
      FirstError({CheckTensor(a.fp, in, "in", memory_), CheckTensor(a.fp, out, "out", memory_),
                  counts, CheckCount(a.fp, in, "in (Σ send_counts)", sent),
                  CheckCount(a.fp, out, "out (Σ recv_counts)", received)});
  return Enqueue(std::move(a), v);
}

std::shared_ptr<Work> Communicator::Broadcast(Tensor& buffer, int root) {
  if (Misplaced(buffer)) {
    return StagedCollective(
        {CollectiveOp::kBroadcast, buffer.dtype(), buffer.numel(), ReduceOp::kSum, root}, buffer,
        buffer, [&](const Tensor&, Tensor& b) { return Broadcast(b, root); });
  }
  CollectiveArgs a;
  a.fp = {CollectiveOp::kBroadcast, buffer.dtype(), buffer.numel(), ReduceOp::kSum, root};
  a.in = BufferData(buffer, memory_);
  a.out = BufferData(buffer, memory_);
  const absl::Status v = FirstError(
      {CheckTensor(a.fp, buffer, "buffer", memory_), CheckPeer(a.fp, root, size_, rank_)});
  return Enqueue(std::move(a), v);
}

std::shared_ptr<Work> Communicator::Send(const Tensor& buffer, int peer, int tag) {
  if (Misplaced(buffer)) {
    Tensor none;
    return StagedCollective(
        {CollectiveOp::kSend, buffer.dtype(), buffer.numel(), ReduceOp::kSum, peer}, buffer, none,
        [&](const Tensor& b, Tensor&) { return Send(b, peer, tag); });
  }
  CollectiveArgs a;
  a.fp = {CollectiveOp::kSend, buffer.dtype(), buffer.numel(), ReduceOp::kSum, peer};
  a.in = BufferData(buffer, memory_);
  a.tag = tag;
  const absl::Status v = FirstError(
      {CheckTensor(a.fp, buffer, "buffer", memory_), CheckPeer(a.fp, peer, size_, rank_)});
  return Enqueue(std::move(a), v);
}

std::shared_ptr<Work> Communicator::Recv(Tensor& buffer, int peer, int tag) {
  if (Misplaced(buffer)) {
    const Tensor none;
    return StagedCollective(
        {CollectiveOp::kRecv, buffer.dtype(), buffer.numel(), ReduceOp::kSum, peer}, none, buffer,
        [&](const Tensor&, Tensor& b) { return Recv(b, peer, tag); });
  }
  CollectiveArgs a;
  a.fp = {CollectiveOp::kRecv, buffer.dtype(), buffer.numel(), ReduceOp::kSum, peer};
  a.out = BufferData(buffer, memory_);
  a.tag = tag;
  const absl::Status v = FirstError(
      {CheckTensor(a.fp, buffer, "buffer", memory_), CheckPeer(a.fp, peer, size_, rank_)});
  return Enqueue(std::move(a), v);
}

std::shared_ptr<Work> Communicator::Barrier() {
  CollectiveArgs a;
  a.fp = {CollectiveOp::kBarrier, DType::kF32, 0};
  return Enqueue(std::move(a), absl::OkStatus());
}

absl::StatusOr<std::unique_ptr<Communicator>> Communicator::Split(int color, int key) {
  std::unique_ptr<Backend> child;
  Task task;
  task.args.fp = {CollectiveOp::kBarrier, DType::kI32, 0};
  task.custom = [&](Deadline deadline) -> absl::Status {
    absl::StatusOr<std::unique_ptr<Backend>> b = backend_->Split(color, key, deadline);
    if (!b.ok()) return b.status();
    child = std::move(b).value();
    return absl::OkStatus();
  };
  absl::Status s = EnqueueTask(std::move(task))->Wait();
  if (!s.ok()) return s;
  return std::make_unique<Communicator>(std::move(child), options_);
}

}  // namespace loom::comm
