// Communicator: a fixed group of ranks and the asynchronous collectives between them.
//
//   std::unique_ptr<Communicator> world = ...;   // e.g. MakeLocalWorld(4)[r], MakeMpiWorld()
//   auto w = world->AllReduce(grad, grad, ReduceOp::kSum);   // returns at once
//   Backward();                                               // overlaps with the reduction
//   LOOM_RETURN_IF_ERROR(w->Wait());
//   LOOM_ASSIGN_OR_RETURN(auto tp, world->Split(/*color=*/rank / 2, /*key=*/rank));
//
// Every rank calls the same collectives in the same order. Calls are queued and run one at a time
// on this communicator's progress thread, which sleeps when idle; a short call issued while the
// communicator is idle is first tried on the caller's thread (see CommOptions::inline_max_bytes),
// so small collectives avoid the thread handoff. Buffers (host tensors, dtypes
// f32, bf16, f16, i32, i64; 16-bit types reduce in f32) belong to the call until its Work
// completes. Each call gets a sequence number and a Fingerprint; the last `history` calls are
// kept for diagnostics.
//
// Never a silent hang: a call that waits on a peer for longer than `timeout` fails with
// DeadlineExceeded naming the op, its sequence number and the missing rank(s); the history is
// logged and, unless `abort_on_error` is off, the job is taken down. With `check_fingerprints`
// (env LOOM_DEBUG_COLLECTIVES=1) ranks first compare fingerprints and a mismatch fails with each
// rank's op, dtype and count. After any error the communicator is poisoned: every later call
// fails with the same error.
#pragma once

#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "absl/types/span.h"
#include "comm/backend.h"
#include "comm/types.h"
#include "comm/work.h"
#include "runtime/tensor.h"

namespace loom::comm {

struct CommOptions {
  absl::Duration timeout = absl::Seconds(300);  // env LOOM_COMM_TIMEOUT_S overrides
  bool check_fingerprints = false;              // env LOOM_DEBUG_COLLECTIVES=1 turns on
  int history = 64;
  bool abort_on_error = true;  // after logging a fatal error, call Backend::Abort(1)
  // Caller-thread fast path: a call whose largest buffer has at most `inline_max_bytes` and that
  // is issued while nothing else is queued or running is tried on the caller's thread; if the
  // backend's peers are there within `inline_patience` it completes before the call returns,
  // otherwise the rest is handed to the progress thread as usual. A call therefore never holds
  // its caller for much longer than `inline_patience` plus its own copy and reduction work.
  // 0 turns it off (env LOOM_COMM_INLINE_BYTES). Not used with check_fingerprints.
  int64_t inline_max_bytes = 256 << 10;
  // The same for AllToAllV (env LOOM_COMM_INLINE_EXCHANGE_BYTES): MoE's dispatch and combine,
  // whose results the caller needs next and whose copies are the caller's receive work either
  // way; handing them to the progress thread costs two thread switches per call and wins only
  // where a core is idle. Reductions keep the lower limit: a large all-reduce behind the backward
  // pass is where the progress thread overlaps.
  int64_t inline_exchange_max_bytes = 64 << 20;
  absl::Duration inline_patience = absl::Microseconds(50);

  // Defaults with the environment variables above applied.
  static CommOptions FromEnv();
};

class Communicator {
 public:
  Communicator(std::unique_ptr<Backend> backend, CommOptions options);
  ~Communicator();  // finishes queued calls, then stops the progress thread
  Communicator(const Communicator&) = delete;
  Communicator& operator=(const Communicator&) = delete;

  int rank() const { return rank_; }
  int size() const { return size_; }
  const std::string& backend_name() const { return backend_name_; }
  // Where the backend's buffers are: a device backend (nccl) queues its calls on the device.
  runtime::Device memory() const { return memory_; }
  const CommOptions& options() const { return options_; }
  // Memory this communicator's peers can reach directly (the shm backend's arena: on by default
  // for groups of 2+ ranks, off with LOOM_SHM_ARENA_BYTES=0), or nullptr. Collectives on tensors
  // allocated from it may skip a staging copy (all-gather writes straight into every rank's
  // output, small all-reduces read inputs in place). Tensors must be freed before the
  // communicator is destroyed (the memory is unmapped with it).
  runtime::Allocator* shared_allocator() { return backend_->shared_allocator(); }

  // Host or device tensors. Tensors not in the backend's memory (device tensors on a host
  // backend, host tensors on nccl) are staged: the input is copied to a buffer of the backend's
  // memory when the call is made, the call runs there in the group's order, and the Work
  // completes once the result is copied back into the output. On a group of one rank, where every
  // collective's result is its input, it is one copy instead.
  std::shared_ptr<Work> AllReduce(const runtime::Tensor& in, runtime::Tensor& out, ReduceOp op);
  std::shared_ptr<Work> ReduceScatter(const runtime::Tensor& in, runtime::Tensor& out, ReduceOp op);
  std::shared_ptr<Work> AllGather(const runtime::Tensor& in, runtime::Tensor& out);
  std::shared_ptr<Work> AllToAll(const runtime::Tensor& in, runtime::Tensor& out);
  // send_counts[j] elements of `in` go to rank j; recv_counts[j] elements of `out` come from j.
  std::shared_ptr<Work> AllToAllV(const runtime::Tensor& in, absl::Span<const int64_t> send_counts,
                                  runtime::Tensor& out, absl::Span<const int64_t> recv_counts);
  std::shared_ptr<Work> Broadcast(runtime::Tensor& buffer, int root);
  std::shared_ptr<Work> Send(const runtime::Tensor& buffer, int peer, int tag = 0);
  std::shared_ptr<Work> Recv(runtime::Tensor& buffer, int peer, int tag = 0);
  std::shared_ptr<Work> Barrier();

  // Collective: the communicator of the ranks with the same color, ordered by (key, rank).
  absl::StatusOr<std::unique_ptr<Communicator>> Split(int color, int key);

  // The last calls, oldest first: "#17 AllReduce(f32, count 4099, sum): done".
  std::vector<std::string> History() const;
  // OK, or the error that poisoned this communicator.
  absl::Status poison() const;

 private:
  struct Task {
    CollectiveArgs args;
    std::shared_ptr<Work> work;
    std::function<absl::Status(Deadline)> custom;  // Split and other non-backend calls
    bool resumed = false;         // started by the caller-thread fast path; Run() continues it
    const char* label = "Split";  // a custom call's name in the history and in errors
  };
  // One history line, formatted only when History() is read (recording stays cheap).
  struct HistoryEntry {
    uint64_t seq;
    Fingerprint fp;
    const char* custom;  // a custom call's label; nullptr for a collective
    const char* state;
  };

  std::shared_ptr<Work> Enqueue(CollectiveArgs args, absl::Status validation);
  // A collective whose `in` or `out` is not in the backend's memory (see AllReduce): the
  // one-rank copy, or `call` on staged copies (undefined stay undefined), as described there.
  using StagedCall =
      std::function<std::shared_ptr<Work>(const runtime::Tensor& in, runtime::Tensor& out)>;
  std::shared_ptr<Work> StagedCollective(const Fingerprint& fp, const runtime::Tensor& in,
                                         runtime::Tensor& out, const StagedCall& call);
  bool Misplaced(const runtime::Tensor& t) const { return t.defined() && t.device() != memory_; }
  std::shared_ptr<Work> EnqueueTask(Task task, int64_t bytes = -1);
  void RunInline(Task& task, const absl::Status& poisoned);
  void ProgressLoop();
  void RunTask(Task& task);
  void FinishTask(Task& task, absl::Status status);
  void SkipPoisoned(Task& task, const absl::Status& poisoned);
  absl::Status CheckFingerprints(const CollectiveArgs& args, Deadline deadline);
  void Record(const Task& task, const char* state);
  void RecordLocked(const Task& task, const char* state);
  void Fail(const absl::Status& error);
  Deadline NextDeadline() const;
  int64_t LargestBuffer(const CollectiveArgs& args) const;

  std::unique_ptr<Backend> backend_;
  CommOptions options_;
  const int rank_;
  const int size_;
  const std::string backend_name_;
  const runtime::Device memory_;  // where the backend's buffers are

  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::deque<Task> queue_;
  bool stopping_ = false;
  bool busy_ = false;  // a call is running (on the progress thread or inline on a caller)
  uint64_t next_seq_ = 0;
  absl::Status poison_;
  std::deque<HistoryEntry> history_;
  std::thread progress_;
};

}  // namespace loom::comm
