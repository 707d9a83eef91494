#include "comm/nccl/nccl_backend.h"

#include <algorithm>
#include <condition_variable>
#include <cstring>
#include <deque>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/types/span.h"
#include "comm/spin_wait.h"
#include "runtime/base/status_macros.h"
#include "runtime/tensor.h"

namespace loom::comm {

namespace {

using nccl::Api;
using runtime::DType;
using runtime::Tensor;

// Stops a communicator that failed or hangs, and says so after `why`.
absl::Status AbortWith(Api& api, Api::Comm comm, const absl::Status& why) {
  api.Abort(comm);
  return absl::Status(why.code(),
                      absl::StrCat(why.message(), "; NCCL communicator aborted (ncclCommAbort)"));
}

absl::Status AsyncError(const char* what, const absl::Status& error) {
  return absl::InternalError(
      absl::StrCat("NCCL reported an asynchronous error (", what, "): ", error.message()));
}

// Polls a communicator being initialised, split or queueing a call until it is ready: its error,
// or DeadlineExceeded at the deadline.
absl::Status WaitReady(Api& api, Api::Comm comm, Deadline deadline, const char* what) {
  SpinWait wait(deadline, std::nullopt, /*oversubscribed=*/true);
  for (;;) {
    const absl::StatusOr<bool> ready = api.Ready(comm);
    if (!ready.ok()) return AsyncError(what, ready.status());
    if (*ready) return absl::OkStatus();
    if (wait.Pause() == SpinWait::kTimedOut) {
      return absl::DeadlineExceededError(absl::StrCat(
          "NCCL ", what, " did not finish before the deadline (does every rank take part?)"));
    }
  }
}

// WaitReady for a communicator being made: aborted if it fails.
absl::Status ReadyOrAbort(Api& api, Api::Comm comm, Deadline deadline, const char* what) {
  const absl::Status s = WaitReady(api, comm, deadline, what);
  return s.ok() ? s : AbortWith(api, comm, s);
}

// The order in which one rank made its NCCL calls, over all its NCCL communicators (the world and
// its splits share one). NCCL wants every rank to queue the operations of different communicators
// in the same order (they wait for their peers on the device, and may hold the GPU while they
// do); a rank makes its calls in program order, the same on every rank where the program issues
// them at points of its own (data parallelism's ordered issue: DataParallel::Options), but each
// communicator queues its own on its own progress thread. So a call takes a ticket when it is made
// and is queued only after every earlier ticket has been queued (or given up).
class IssueOrder {
 public:
  uint64_t Take() {
    std::lock_guard<std::mutex> lock(mu_);
    return next_++;
  }
  // Whether every ticket below `ticket` was released before the deadline.
  bool WaitForEarlier(uint64_t ticket, Deadline deadline) {
    std::unique_lock<std::mutex> lock(mu_);
    return cv_.wait_until(lock, deadline.at, [&] { return released_below_ >= ticket; });
  }
  void Release(const std::vector<uint64_t>& tickets) {
    if (tickets.empty()) return;
    {
      std::lock_guard<std::mutex> lock(mu_);
      released_.insert(tickets.begin(), tickets.end());
      while (!released_.empty() && *released_.begin() == released_below_) {
        released_.erase(released_.begin());
        ++released_below_;
      }
    }
    cv_.notify_all();
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  uint64_t next_ = 0;
  uint64_t released_below_ = 0;  // every ticket below this one is released
  std::set<uint64_t> released_;  // released tickets at or above released_below_
};

// Fails when two ranks are on one GPU (NCCL refuses that), naming them and what to do instead.
// Collective over `bootstrap`.
absl::Status CheckOneRankPerGpu(Api& api, Communicator& bootstrap) {
  constexpr int kWords = 32;  // "host:0000:19:00.0", the host name up to 236 characters
  LOOM_ASSIGN_OR_RETURN(const std::string id, api.DeviceId());
  Tensor mine = Tensor::Zeros({kWords}, DType::kI64, runtime::MemoryTag::kComm);
  std::memcpy(mine.raw_data(), id.data(), std::min<size_t>(id.size(), kWords * 8 - 1));
  const int n = bootstrap.size();
  Tensor all = Tensor::Empty({kWords * n}, DType::kI64, runtime::MemoryTag::kComm);
  LOOM_RETURN_IF_ERROR(bootstrap.AllGather(mine, all)->Wait());
  std::vector<std::string> ids;
  for (int r = 0; r < n; ++r) {
    ids.emplace_back(static_cast<const char*>(all.raw_data()) + r * kWords * 8);
  }
  for (int r = 0; r < n; ++r) {
    for (int q = r + 1; q < n; ++q) {
      if (ids[r] != ids[q]) continue;
      return absl::FailedPreconditionError(absl::StrCat(
          "ranks ", r, " and ", q, " are on the same GPU (", ids[r],
          "): NCCL needs a GPU per rank. Give each rank its own (CUDA_VISIBLE_DEVICES) or use a "
          "host backend (--comm shm|mpi|ring|hier), whose collectives on device tensors are "
          "staged through host memory (docs/gpu.md)"));
    }
  }
  return absl::OkStatus();
}

// NCCL's unique id, made by rank 0 and broadcast by `bootstrap`, or rank 0's error on every rank.
absl::StatusOr<nccl::UniqueId> ShareUniqueId(Api& api, Communicator& bootstrap) {
  constexpr int kWords = nccl::UniqueId::kBytes / 8;
  // Word 0 says whether rank 0 has an id; the id follows.
  Tensor words = Tensor::Zeros({kWords + 1}, DType::kI64, runtime::MemoryTag::kComm);
  int64_t* w = words.data<int64_t>();
  absl::Status made = absl::OkStatus();
  if (bootstrap.rank() == 0) {
    absl::StatusOr<nccl::UniqueId> id = api.GetUniqueId();
    made = id.status();
    if (id.ok()) {
      w[0] = 1;
      std::memcpy(w + 1, id->bytes, nccl::UniqueId::kBytes);
    }
  }
  LOOM_RETURN_IF_ERROR(bootstrap.Broadcast(words, 0)->Wait());
  if (!made.ok()) return made;
  if (words.data<int64_t>()[0] != 1) {
    return absl::InternalError("rank 0 could not make NCCL's unique id (see its log)");
  }
  nccl::UniqueId id;
  std::memcpy(id.bytes, words.data<int64_t>() + 1, nccl::UniqueId::kBytes);
  return id;
}

class NcclBackend final : public Backend {
 public:
  NcclBackend(Api* api, std::unique_ptr<Communicator> bootstrap, Api::Comm comm, Api::Stream stream,
              Api::Event done, std::shared_ptr<IssueOrder> order,
              std::function<void(int)> abort_job)
      : api_(api),
        bootstrap_(std::move(bootstrap)),
        comm_(comm),
        stream_(stream),
        done_(done),
        order_(std::move(order)),
        abort_job_(std::move(abort_job)),
        barrier_(
            Tensor::Zeros({1}, DType::kF32, runtime::MemoryTag::kComm, &api->DeviceAllocator())) {}

  ~NcclBackend() override {
    for (const Made& m : made_) {
      if (m.event != nullptr) api_->DestroyEvent(m.event);
    }
    for (Api::Event event : free_events_) api_->DestroyEvent(event);
    if (!aborted_) api_->Destroy(comm_);
    api_->DestroyEvent(done_);
    api_->DestroyStream(stream_);
  }

  int rank() const override { return bootstrap_->rank(); }
  int size() const override { return bootstrap_->size(); }
  std::string name() const override { return "nccl"; }
  runtime::Device memory() const override { return runtime::Device::kCuda; }
  runtime::Allocator* staging_allocator() override { return &api_->DeviceAllocator(); }

  // On the caller's thread, when the call is made: its place in this rank's order of NCCL calls
  // and the point of the caller's device work it must follow.
  void Issued(const CollectiveArgs& args) override {
    std::lock_guard<std::mutex> lock(mu_);
    Made m{args.seq, order_->Take(), nullptr};
    if (issue_error_.ok()) {
      if (!free_events_.empty()) {
        m.event = free_events_.back();
        free_events_.pop_back();
      } else {
        absl::StatusOr<Api::Event> event = api_->CreateEvent();
        issue_error_ = event.status();
        if (event.ok()) m.event = *event;
      }
      if (m.event != nullptr) issue_error_ = api_->Record(m.event, /*stream=*/nullptr);
    }
    made_.push_back(m);
  }

  void Abandoned(const CollectiveArgs& args) override {
    std::vector<uint64_t> tickets;
    Recycle(TakeMade(args.seq, tickets));
    order_->Release(tickets);
  }

  absl::Status Run(const CollectiveArgs& args, Deadline deadline) override {
    std::vector<uint64_t> tickets;
    const Api::Event ready = TakeMade(args.seq, tickets);  // recorded when the call was made
    // The tickets go back however this ends (once queued when the call is queued).
    struct ReleaseAtExit {
      IssueOrder& order;
      std::vector<uint64_t>& tickets;
      ~ReleaseAtExit() { order.Release(tickets); }
    } release{*order_, tickets};
    if (aborted_) {
      Recycle(ready);
      return absl::FailedPreconditionError("the NCCL communicator was aborted");
    }
    if (!tickets.empty() &&
        !order_->WaitForEarlier(*std::min_element(tickets.begin(), tickets.end()), deadline)) {
      Recycle(ready);
      return absl::DeadlineExceededError(
          "an earlier NCCL call of this rank (on another communicator) was not queued before the "
          "deadline");
    }
    absl::Status waited = IssueError();
    if (waited.ok() && ready != nullptr) waited = api_->StreamWait(stream_, ready);
    Recycle(ready);  // the stream's wait took the event's recorded point when it was queued
    LOOM_RETURN_IF_ERROR(waited);
    // From here NCCL may hold the caller's buffers: a failure aborts the communicator.
    absl::Status queued = Queue(args);
    // A non-blocking communicator may still be queueing the call: the event goes after it.
    if (queued.ok()) queued = WaitReady(*api_, comm_, deadline, "queueing the call");
    if (queued.ok()) queued = api_->Record(done_, stream_);
    LOOM_RETURN_IF_ERROR(Fatal(queued));
    order_->Release(tickets);  // queued: later calls of other communicators may follow
    tickets.clear();
    return WaitDone(deadline);
  }

  // Over the host communicator of the same ranks (the fingerprint check's all-gather).
  absl::Status RunOnHost(const CollectiveArgs& args, Deadline deadline) override {
    (void)deadline;  // the host communicator keeps its own
    if (args.fp.op != CollectiveOp::kAllGather || args.fp.dtype != DType::kI64) {
      return absl::UnimplementedError("the nccl backend runs only i64 all-gathers on the host");
    }
    const int64_t n = args.fp.count;
    Tensor in = Tensor::Empty({n}, DType::kI64, runtime::MemoryTag::kComm);
    Tensor out = Tensor::Empty({n * size()}, DType::kI64, runtime::MemoryTag::kComm);
    std::memcpy(in.raw_data(), args.in, static_cast<size_t>(n) * sizeof(int64_t));
    LOOM_RETURN_IF_ERROR(bootstrap_->AllGather(in, out)->Wait());
    std::memcpy(args.out, out.raw_data(), static_cast<size_t>(n * size()) * sizeof(int64_t));
    return absl::OkStatus();
  }

  absl::StatusOr<std::unique_ptr<Backend>> Split(int color, int key, Deadline deadline) override {
    if (aborted_) return absl::FailedPreconditionError("the NCCL communicator was aborted");
    LOOM_ASSIGN_OR_RETURN(std::unique_ptr<Communicator> host, bootstrap_->Split(color, key));
    LOOM_ASSIGN_OR_RETURN(Api::Comm child, api_->Split(comm_, color, key));
    LOOM_RETURN_IF_ERROR(ReadyOrAbort(*api_, child, deadline, "split"));
    // The split may have left work on the parent too (non-blocking mode).
    const absl::Status parent = Fatal(WaitReady(*api_, comm_, deadline, "split (parent)"));
    if (!parent.ok()) {
      api_->Abort(child);
      return parent;
    }
    return Make(api_, std::move(host), child, order_, abort_job_);
  }

  [[noreturn]] void Abort(int exit_code) override {
    if (abort_job_) abort_job_(exit_code);
    Backend::Abort(exit_code);
  }

  // The backend of an initialised communicator: its stream, its event and its barrier buffer.
  static absl::StatusOr<std::unique_ptr<Backend>> Make(Api* api,
                                                       std::unique_ptr<Communicator> bootstrap,
                                                       Api::Comm comm,
                                                       std::shared_ptr<IssueOrder> order,
                                                       std::function<void(int)> abort_job) {
    absl::StatusOr<Api::Stream> stream = api->CreateStream();
    if (!stream.ok()) {
      api->Destroy(comm);
      return stream.status();
    }
    absl::StatusOr<Api::Event> done = api->CreateEvent();
    if (!done.ok()) {
      api->DestroyStream(*stream);
      api->Destroy(comm);
      return done.status();
    }
    return std::unique_ptr<Backend>(new NcclBackend(api, std::move(bootstrap), comm, *stream, *done,
                                                    std::move(order), std::move(abort_job)));
  }

 private:
  // What Issued recorded for a call: its seq, its ticket and its event (nullptr after an error).
  struct Made {
    uint64_t seq;
    uint64_t ticket;
    Api::Event event;
  };

  // The event Issued recorded for call `seq`, or nullptr, and the tickets of the calls up to it
  // (entries of earlier calls, which never ran, give their events back).
  Api::Event TakeMade(uint64_t seq, std::vector<uint64_t>& tickets) {
    Api::Event ready = nullptr;
    std::lock_guard<std::mutex> lock(mu_);
    while (!made_.empty() && made_.front().seq <= seq) {
      const Made m = made_.front();
      made_.pop_front();
      tickets.push_back(m.ticket);
      if (m.event == nullptr) continue;
      if (m.seq == seq) {
        ready = m.event;
      } else {
        free_events_.push_back(m.event);
      }
    }
    return ready;
  }

  void Recycle(Api::Event event) {
    if (event == nullptr) return;
    std::lock_guard<std::mutex> lock(mu_);
    free_events_.push_back(event);
  }

  absl::Status IssueError() {
    std::lock_guard<std::mutex> lock(mu_);
    return issue_error_;
  }

  // `s`, after aborting the communicator if it is an error: once a call may be on the device, a
  // failure leaves NCCL holding buffers, and only an abort stops it.
  absl::Status Fatal(const absl::Status& s) {
    if (s.ok() || aborted_) return s;
    aborted_ = true;
    return AbortWith(*api_, comm_, s);
  }

  // The call's NCCL operations, queued on the stream.
  absl::Status Queue(const CollectiveArgs& a) {
    const Fingerprint& fp = a.fp;
    const size_t count = static_cast<size_t>(fp.count);
    switch (fp.op) {
      case CollectiveOp::kAllReduce:
        return api_->AllReduce(a.in, a.out, count, fp.dtype, fp.reduce, comm_, stream_);
      case CollectiveOp::kReduceScatter:
        return api_->ReduceScatter(a.in, a.out, count, fp.dtype, fp.reduce, comm_, stream_);
      case CollectiveOp::kAllGather:
        return api_->AllGather(a.in, a.out, count, fp.dtype, comm_, stream_);
      case CollectiveOp::kAllToAll: {
        const std::vector<int64_t> each(static_cast<size_t>(size()), fp.count);
        return Exchange(a, each, each);
      }
      case CollectiveOp::kAllToAllV:
        return Exchange(a, a.send_counts, a.recv_counts);
      case CollectiveOp::kBroadcast:
        return api_->Broadcast(a.out, a.out, count, fp.dtype, fp.root, comm_, stream_);
      case CollectiveOp::kSend:
        return api_->Send(a.in, count, fp.dtype, fp.root, comm_, stream_);
      case CollectiveOp::kRecv:
        return api_->Recv(a.out, count, fp.dtype, fp.root, comm_, stream_);
      case CollectiveOp::kBarrier:
        return api_->AllReduce(barrier_.device_data(), barrier_.device_data(), 1, DType::kF32,
                               ReduceOp::kSum, comm_, stream_);
    }
    return absl::InternalError("unknown collective");
  }

  // Block j of `in` (send[j] elements) to rank j, block j of `out` (recv[j]) from rank j: one
  // group of a send and a receive per peer with anything to move.
  absl::Status Exchange(const CollectiveArgs& a, absl::Span<const int64_t> send,
                        absl::Span<const int64_t> recv) {
    const size_t es = runtime::DTypeSize(a.fp.dtype);
    const char* in = static_cast<const char*>(a.in);
    char* out = static_cast<char*>(a.out);
    LOOM_RETURN_IF_ERROR(api_->GroupStart());
    absl::Status status;
    int64_t sent = 0, received = 0;
    for (int j = 0; j < size() && status.ok(); ++j) {
      if (send[j] > 0) {
        status =
            api_->Send(in + sent * es, static_cast<size_t>(send[j]), a.fp.dtype, j, comm_, stream_);
      }
      if (status.ok() && recv[j] > 0) {
        status = api_->Recv(out + received * es, static_cast<size_t>(recv[j]), a.fp.dtype, j, comm_,
                            stream_);
      }
      sent += send[j];
      received += recv[j];
    }
    const absl::Status end = api_->GroupEnd();  // the group is closed whatever happened
    return status.ok() ? end : status;
  }

  // The watchdog: polls the call's event, and between polls NCCL's asynchronous error; aborts the
  // communicator on an error or at the deadline.
  absl::Status WaitDone(Deadline deadline) {
    SpinWait wait(deadline, std::nullopt, /*oversubscribed=*/false);
    for (;;) {
      const absl::StatusOr<bool> done = api_->Query(done_);
      if (!done.ok()) return Fatal(done.status());
      if (*done) return absl::OkStatus();
      const absl::StatusOr<bool> healthy = api_->Ready(comm_);
      if (!healthy.ok()) return Fatal(AsyncError("running the call", healthy.status()));
      if (wait.Pause() == SpinWait::kTimedOut) {
        return Fatal(absl::DeadlineExceededError(
            "the call is still running on the device (a peer may not have made it, or made a "
            "different one)"));
      }
    }
  }

  Api* const api_;
  std::unique_ptr<Communicator> bootstrap_;  // host collectives of the same ranks
  const Api::Comm comm_;
  const Api::Stream stream_;
  const Api::Event done_;
  const std::shared_ptr<IssueOrder> order_;  // this rank's, shared with its splits
  const std::function<void(int)> abort_job_;
  const Tensor barrier_;  // one f32 on the device
  bool aborted_ = false;  // progress thread only

  std::mutex mu_;  // Issued runs on callers' threads, Run on the progress thread
  std::deque<Made> made_;
  std::vector<Api::Event> free_events_;
  absl::Status issue_error_;
};

}  // namespace

absl::StatusOr<std::unique_ptr<Backend>> MakeNcclBackend(nccl::Api* api,
                                                         std::unique_ptr<Communicator> bootstrap,
                                                         Deadline deadline,
                                                         std::function<void(int)> abort_job) {
  LOOM_RETURN_IF_ERROR(CheckOneRankPerGpu(*api, *bootstrap));
  LOOM_ASSIGN_OR_RETURN(const nccl::UniqueId id, ShareUniqueId(*api, *bootstrap));
  LOOM_ASSIGN_OR_RETURN(Api::Comm comm, api->InitRank(bootstrap->size(), id, bootstrap->rank()));
  LOOM_RETURN_IF_ERROR(ReadyOrAbort(*api, comm, deadline, "initialisation"));
  return NcclBackend::Make(api, std::move(bootstrap), comm, std::make_shared<IssueOrder>(),
                           std::move(abort_job));
}

}  // namespace loom::comm
