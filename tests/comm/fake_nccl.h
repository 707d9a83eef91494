// A fake of nccl::Api (comm/nccl/api.h) for tests of the NCCL backend without a GPU. Ranks are
// threads; each rank has its own FakeNccl, made by a FakeNcclWorld that holds what NCCL would
// share (unique ids and the communicators they name). Every NCCL operation becomes a call of
// loom's thread-rank communicator (comm/local) on host copies of its buffers (emulated device
// memory is host memory: tests/runtime/emulated_device.h); its result is copied into the
// operation's buffers when an event recorded after it on its stream is first queried done.
// Grouped sends and receives are buffered local sends, then receives (a send to oneself is a
// copy). Streams never run anything themselves, so the default stream's events are done at once.
//
// Faults and checks: a communicator stays "in progress" for `init_polls` Ready() calls; an
// injected asynchronous error; a rank whose calls never complete; each rank's device id; a log of
// the stream and event calls; and a count of aborts.
#pragma once

#include <atomic>
#include <cstring>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "comm/local/local_backend.h"
#include "comm/nccl/api.h"
#include "runtime/base/check.h"
#include "runtime/base/status_macros.h"
#include "runtime/tensor.h"

namespace loom::comm::testing {

using runtime::DType;

class FakeNcclWorld;

class FakeNccl final : public nccl::Api {
 public:
  FakeNccl(FakeNcclWorld* world, int rank) : world_(world), rank_(rank) {}

  // Ready() answers "in progress" this many times for each new communicator, and `queue_polls`
  // times after each queued operation (non-blocking NCCL still queueing it); recording an event
  // on the operation's stream before then is an error.
  int init_polls = 2;
  int queue_polls = 0;
  // Called with each operation's name before it is queued (e.g. to hold one back).
  std::function<void(const char*)> before_queue;
  std::string device_id;  // DeviceId(); "fake-gpu-<rank>" unless set
  // Every later Ready() on this rank fails with `message`.
  void InjectError(std::string message) {
    std::lock_guard<std::mutex> lock(mu_);
    error_ = std::move(message);
  }
  // This rank's events recorded on a communication stream never complete.
  std::atomic<bool> hang{false};
  int aborts() const { return aborts_.load(); }
  // "record default", "record comm", "wait", "AllReduce", ... in call order.
  std::vector<std::string> log() const {
    std::lock_guard<std::mutex> lock(mu_);
    return log_;
  }

  std::string Version() const override { return "fake NCCL"; }
  runtime::Allocator& DeviceAllocator() override;
  absl::StatusOr<std::string> DeviceId() override {
    return device_id.empty() ? absl::StrCat("fake-gpu-", rank_) : device_id;
  }
  absl::StatusOr<nccl::UniqueId> GetUniqueId() override;
  absl::StatusOr<Comm> InitRank(int nranks, const nccl::UniqueId& id, int rank) override;
  absl::StatusOr<Comm> Split(Comm comm, int color, int key) override {
    absl::StatusOr<std::unique_ptr<Communicator>> child = C(comm)->local->Split(color, key);
    if (!child.ok()) return child.status();
    return NewComm(C(comm)->local, std::move(child).value());
  }
  absl::StatusOr<bool> Ready(Comm comm) override {
    std::lock_guard<std::mutex> lock(mu_);
    if (!error_.empty()) return absl::InternalError(error_);
    if (C(comm)->polls_left > 0) {
      --C(comm)->polls_left;
      return false;
    }
    return true;
  }
  void Abort(Comm) override { ++aborts_; }
  void Destroy(Comm) override {}

  absl::Status AllReduce(const void* in, void* out, size_t count, DType dtype, ReduceOp op,
                         Comm comm, Stream stream) override {
    runtime::Tensor a = HostCopy(in, count, dtype), b = Empty(count, dtype);
    BeforeQueue("AllReduce");
    return Push(C(comm), stream, "AllReduce", C(comm)->local->AllReduce(a, b, op), b, out, a);
  }
  absl::Status ReduceScatter(const void* in, void* out, size_t recv_count, DType dtype, ReduceOp op,
                             Comm comm, Stream stream) override {
    const int n = C(comm)->local->size();
    runtime::Tensor a = HostCopy(in, recv_count * n, dtype), b = Empty(recv_count, dtype);
    BeforeQueue("ReduceScatter");
    return Push(C(comm), stream, "ReduceScatter", C(comm)->local->ReduceScatter(a, b, op), b, out,
                a);
  }
  absl::Status AllGather(const void* in, void* out, size_t send_count, DType dtype, Comm comm,
                         Stream stream) override {
    const int n = C(comm)->local->size();
    runtime::Tensor a = HostCopy(in, send_count, dtype), b = Empty(send_count * n, dtype);
    BeforeQueue("AllGather");
    return Push(C(comm), stream, "AllGather", C(comm)->local->AllGather(a, b), b, out, a);
  }
  absl::Status Broadcast(const void* in, void* out, size_t count, DType dtype, int root, Comm comm,
                         Stream stream) override {
    runtime::Tensor a = HostCopy(in, count, dtype);
    BeforeQueue("Broadcast");
    return Push(C(comm), stream, "Broadcast", C(comm)->local->Broadcast(a, root), a, out);
  }
  absl::Status Send(const void* buffer, size_t count, DType dtype, int peer, Comm comm,
                    Stream stream) override {
    if (ThreadGroup().open) {
      ThreadGroup().ops.push_back(
          {true, const_cast<void*>(buffer), count, dtype, peer, C(comm), stream});
      return absl::OkStatus();
    }
    return SendNow(buffer, count, dtype, peer, C(comm), stream);
  }
  absl::Status Recv(void* buffer, size_t count, DType dtype, int peer, Comm comm,
                    Stream stream) override {
    if (ThreadGroup().open) {
      ThreadGroup().ops.push_back({false, buffer, count, dtype, peer, C(comm), stream});
      return absl::OkStatus();
    }
    return RecvNow(buffer, count, dtype, peer, C(comm), stream);
  }
  absl::Status GroupStart() override {
    if (ThreadGroup().open) return absl::InternalError("fake NCCL: nested groups");
    ThreadGroup().open = true;
    return absl::OkStatus();
  }
  // Sends (buffered), then receives; a send to oneself pairs with the receive from oneself.
  absl::Status GroupEnd() override {
    ThreadGroup().open = false;
    std::vector<GroupOp> ops = std::move(ThreadGroup().ops);
    ThreadGroup().ops.clear();
    std::deque<runtime::Tensor> to_self;
    for (const GroupOp& op : ops) {
      if (!op.send) continue;
      if (op.peer == op.comm->local->rank()) {
        to_self.push_back(HostCopy(op.buffer, op.count, op.dtype));
      } else {
        LOOM_RETURN_IF_ERROR(SendNow(op.buffer, op.count, op.dtype, op.peer, op.comm, op.stream));
      }
    }
    for (const GroupOp& op : ops) {
      if (op.send) continue;
      if (op.peer != op.comm->local->rank()) {
        LOOM_RETURN_IF_ERROR(RecvNow(op.buffer, op.count, op.dtype, op.peer, op.comm, op.stream));
        continue;
      }
      if (to_self.empty() || to_self.front().numel() != static_cast<int64_t>(op.count)) {
        return absl::InternalError("fake NCCL: a receive from oneself without its send");
      }
      auto done = std::make_shared<Work>();
      done->Complete(absl::OkStatus());
      LOOM_RETURN_IF_ERROR(
          Push(op.comm, op.stream, "copy to self", done, to_self.front(), op.buffer));
      to_self.pop_front();
    }
    return absl::OkStatus();
  }

  absl::StatusOr<Stream> CreateStream() override {
    std::lock_guard<std::mutex> lock(mu_);
    streams_.push_back(std::make_unique<FakeStream>());
    return static_cast<Stream>(streams_.back().get());
  }
  void DestroyStream(Stream) override {}
  absl::StatusOr<Event> CreateEvent() override {
    std::lock_guard<std::mutex> lock(mu_);
    events_.push_back(std::make_unique<FakeEvent>());
    return static_cast<Event>(events_.back().get());
  }
  void DestroyEvent(Event) override {}
  absl::Status Record(Event event, Stream stream) override {
    std::lock_guard<std::mutex> lock(mu_);
    log_.push_back(stream == nullptr ? "record default" : "record comm");
    FakeEvent* e = static_cast<FakeEvent*>(event);
    if (stream != nullptr && static_cast<FakeStream*>(stream)->comm != nullptr &&
        static_cast<FakeStream*>(stream)->comm->polls_left > 0) {
      return absl::InternalError(
          "fake NCCL: an event recorded while the communicator was still queueing (Ready() had "
          "not said so)");
    }
    e->pending.clear();
    e->on_comm_stream = stream != nullptr;
    if (stream != nullptr) {
      e->pending = std::move(static_cast<FakeStream*>(stream)->pending);
      static_cast<FakeStream*>(stream)->pending.clear();
    }
    return absl::OkStatus();
  }
  absl::Status StreamWait(Stream, Event) override {
    std::lock_guard<std::mutex> lock(mu_);
    log_.push_back("wait");
    return absl::OkStatus();
  }
  absl::StatusOr<bool> Query(Event event) override {
    FakeEvent* e = static_cast<FakeEvent*>(event);
    if (e->on_comm_stream && hang.load()) return false;
    for (const Pending& p : e->pending) {
      if (!p.work->Test()) return false;
      if (!p.work->status().ok()) {
        InjectError(absl::StrCat("fake NCCL: ", p.work->status().message()));
        return false;
      }
    }
    for (Pending& p : e->pending) p.finish();
    e->pending.clear();
    return true;
  }

 private:
  struct FakeComm {
    Communicator* local = nullptr;
    std::unique_ptr<Communicator> owned;  // a split's
    int polls_left = 0;
  };
  struct Pending {
    std::shared_ptr<Work> work;
    std::function<void()> finish;  // the result into the operation's buffer
  };
  struct FakeStream {
    std::vector<Pending> pending;
    FakeComm* comm = nullptr;  // of the last operation queued
  };
  struct FakeEvent {
    std::vector<Pending> pending;
    bool on_comm_stream = false;
  };
  struct GroupOp {
    bool send;
    void* buffer;
    size_t count;
    DType dtype;
    int peer;
    FakeComm* comm;
    Stream stream;
  };
  struct Group {
    bool open = false;
    std::vector<GroupOp> ops;
  };

  static FakeComm* C(Comm comm) { return static_cast<FakeComm*>(comm); }
  void BeforeQueue(const char* what) const {
    if (before_queue) before_queue(what);
  }
  static Group& ThreadGroup() {
    static thread_local Group group;  // NCCL's groups are per thread too
    return group;
  }
  static runtime::Tensor Empty(size_t count, DType dtype) {
    return runtime::Tensor::Empty({static_cast<int64_t>(count)}, dtype, runtime::MemoryTag::kComm);
  }
  static runtime::Tensor HostCopy(const void* p, size_t count, DType dtype) {
    runtime::Tensor t = Empty(count, dtype);
    if (count > 0) std::memcpy(t.raw_data(), p, count * runtime::DTypeSize(dtype));
    return t;
  }
  Comm NewComm(Communicator* local, std::unique_ptr<Communicator> owned) {
    std::lock_guard<std::mutex> lock(mu_);
    comms_.push_back(std::make_unique<FakeComm>());
    FakeComm* c = comms_.back().get();
    c->owned = std::move(owned);
    c->local = c->owned != nullptr ? c->owned.get() : local;
    c->polls_left = init_polls;
    return static_cast<Comm>(c);
  }
  // Queues `work` on `stream`; once it is done, `result` is copied to `out`. `input` (the local
  // call's) lives until then.
  absl::Status Push(FakeComm* comm, Stream stream, const char* what, std::shared_ptr<Work> work,
                    runtime::Tensor result, void* out, runtime::Tensor input = {}) {
    if (work->Test() && !work->status().ok()) return work->status();  // refused arguments
    std::lock_guard<std::mutex> lock(mu_);
    log_.push_back(what);
    comm->polls_left = queue_polls;
    static_cast<FakeStream*>(stream)->comm = comm;
    static_cast<FakeStream*>(stream)->pending.push_back(
        {std::move(work), [result, out, input] {
           if (out != nullptr && result.numel() > 0) {
             std::memcpy(out, result.raw_data(),
                         result.numel() * runtime::DTypeSize(result.dtype()));
           }
         }});
    return absl::OkStatus();
  }
  absl::Status SendNow(const void* buffer, size_t count, DType dtype, int peer, FakeComm* comm,
                       Stream stream) {
    runtime::Tensor a = HostCopy(buffer, count, dtype);
    BeforeQueue("Send");
    return Push(comm, stream, "Send", comm->local->Send(a, peer), runtime::Tensor(), nullptr, a);
  }
  absl::Status RecvNow(void* buffer, size_t count, DType dtype, int peer, FakeComm* comm,
                       Stream stream) {
    runtime::Tensor b = Empty(count, dtype);
    BeforeQueue("Recv");
    return Push(comm, stream, "Recv", comm->local->Recv(b, peer), b, buffer);
  }

  FakeNcclWorld* const world_;
  const int rank_;
  mutable std::mutex mu_;
  std::string error_;
  std::atomic<int> aborts_{0};
  std::vector<std::string> log_;
  std::vector<std::unique_ptr<FakeComm>> comms_;
  std::vector<std::unique_ptr<FakeStream>> streams_;
  std::vector<std::unique_ptr<FakeEvent>> events_;
};

// What the ranks' FakeNccl share: unique ids and the thread-rank worlds they name.
class FakeNcclWorld {
 public:
  FakeNcclWorld(int size, runtime::Allocator* device) : device_(device) {
    for (int r = 0; r < size; ++r) ranks_.push_back(std::make_unique<FakeNccl>(this, r));
  }
  FakeNccl& rank(int r) { return *ranks_[static_cast<size_t>(r)]; }
  runtime::Allocator& device() { return *device_; }

  nccl::UniqueId NewId() {
    std::lock_guard<std::mutex> lock(mu_);
    nccl::UniqueId id;
    const std::string text = absl::StrCat("fake-nccl-", next_id_++);
    std::memcpy(id.bytes, text.data(), text.size());
    return id;
  }
  // Rank `rank`'s communicator of the world of `nranks` that `id` names (made by the first
  // caller).
  Communicator* Join(int nranks, const nccl::UniqueId& id, int rank) {
    std::lock_guard<std::mutex> lock(mu_);
    std::vector<std::unique_ptr<Communicator>>& world = worlds_[std::string(id.bytes)];
    if (world.empty()) {
      CommOptions options;
      options.abort_on_error = false;
      options.timeout = absl::Seconds(30);
      world = MakeLocalWorld(nranks, options);
    }
    return world[static_cast<size_t>(rank)].get();
  }

 private:
  runtime::Allocator* device_;
  std::mutex mu_;
  int next_id_ = 0;
  std::map<std::string, std::vector<std::unique_ptr<Communicator>>> worlds_;
  std::vector<std::unique_ptr<FakeNccl>> ranks_;  // destroyed first: they use the worlds
};

inline runtime::Allocator& FakeNccl::DeviceAllocator() { return world_->device(); }

inline absl::StatusOr<nccl::UniqueId> FakeNccl::GetUniqueId() { return world_->NewId(); }

inline absl::StatusOr<nccl::Api::Comm> FakeNccl::InitRank(int nranks, const nccl::UniqueId& id,
                                                          int rank) {
  return NewComm(world_->Join(nranks, id, rank), nullptr);
}

}  // namespace loom::comm::testing
