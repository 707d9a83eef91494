// ShmGroup: the shared-memory state of one `shm` communicator and the waits on it. Every rank owns
// a ring of slot bytes that it alone writes, and a shared result ring (same size) holds the
// reduced segments of the two-phase algorithms. Each step (one chunk of one call) reserves the
// next `bytes` of the rings, at the same offset on every rank (all ranks reserve the same sizes in
// the same order). A step reserves at most a quarter of the ring, so the bytes it overwrites were
// last used two or more steps earlier; walking around a large ring also means a line is rewritten
// long after the peers read it, when it has left their private caches: rewriting a line a peer
// read a moment ago costs a slow cross-core invalidation per line, which dominated medium-sized
// calls with plain double buffering. Per-step `arrived` and `reduced` flags (one cache line each,
// indexed by step) hold step numbers, published with release and read with acquire. No barriers:
// at step s a rank writes its reservation (its peers finished reading those bytes by step s - 2
// and proved it by publishing step s - 1), publishes, and waits until every rank published s
// before reading theirs.
//
//   LOOM_ASSIGN_OR_RETURN(auto g, ShmGroup::Create(comm, ShmGroup::Config{}));
//   const ShmStep step = g->NextStep(bytes);           // bytes <= g->MaxStepBytes()
//   CopyFast(g->Slot(g->rank(), step), in, bytes);
//   g->Publish(ShmGroup::kArrived, step.number);
//   LOOM_RETURN_IF_ERROR(g->WaitAll(ShmGroup::kArrived, step.number, wait));  // read peers' slots
#pragma once

#include <mpi.h>
#include <sys/types.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <vector>

#include "absl/status/statusor.h"
#include "comm/backend.h"
#include "comm/shm/shm_segment.h"

namespace loom::comm {

// How long a wait on peers may last: until the call's deadline, or — on the caller-thread fast
// path — until `give_up_at`, when the wait returns Suspended() and sets `suspended`; the call is
// then resumed where it stopped on the progress thread.
struct ShmWait {
  Deadline deadline;
  std::optional<std::chrono::steady_clock::time_point> give_up_at;
  bool suspended = false;
};
// The status a wait returns when it gave up (only meaningful with ShmWait::suspended set).
absl::Status Suspended();

// One step: its number (1, 2, ... on every rank alike) and its reservation in the rings.
struct ShmStep {
  uint64_t number = 0;
  size_t offset = 0;
};

class ShmGroup {
 public:
  enum Flag { kArrived, kReduced };

  struct Config {
    int64_t ring_bytes = 2 << 20;        // each rank's slot ring, and the result ring
    int64_t chunk_bytes = 512 << 10;     // the most one step reserves (capped at a quarter ring)
    int64_t stream_min_bytes = 8 << 20;  // outputs at least this large: non-temporal stores
    enum SharedStores { kAuto, kPlain, kStream } shared_stores = kAuto;  // see SharedStore
  };

  // Collective (blocking) over `comm`, whose ranks must share this host.
  static absl::StatusOr<std::unique_ptr<ShmGroup>> Create(MPI_Comm comm, const Config& config);

  int rank() const { return rank_; }
  int size() const { return size_; }
  bool oversubscribed() const { return oversubscribed_; }
  // The most one step may reserve (at most a quarter of the ring): the chunk size of large
  // messages.
  int64_t MaxStepBytes() const { return max_step_bytes_; }
  // Whether a call whose output has `bytes` bytes writes it with non-temporal stores.
  bool StreamOutput(int64_t bytes) const { return bytes >= stream_min_bytes_; }

  // Starts this rank's next step, reserving `bytes` (<= MaxStepBytes()) of the rings.
  ShmStep NextStep(int64_t bytes);
  // Rank r's reserved slot bytes of `step`, 64-byte aligned.
  char* Slot(int r, const ShmStep& step) const {
    return base_ + slots_offset_ + static_cast<size_t>(r) * ring_stride_ + step.offset;
  }
  // Up to kInlineBytes of rank r's data for step `number` may travel in its arrived-flag line
  // instead, so a tiny message and its flag reach the peer as one cache line.
  static constexpr int64_t kInlineBytes = 56;
  char* Inline(int r, uint64_t number) const {
    return reinterpret_cast<char*>(&FlagWord(kArrived, r, number)) + sizeof(uint64_t);
  }
  // The reserved bytes of the shared result ring for `step`, 64-byte aligned.
  char* Result(const ShmStep& step) const { return base_ + result_offset_ + step.offset; }

  // Stores that peers will read (slots, the result ring) go in plain or non-temporal flavour,
  // whichever measures faster. Rewriting a line another core still caches costs a cross-core
  // invalidation per line; on some placements of the ranks' cores (vCPUs on different chiplets,
  // as seen on this project's VMs) that makes plain stores 5-10x slower than non-temporal ones,
  // on others plain stores win clearly (the peer then reads from cache, not memory). So the cost
  // of a flavour is the writer's store time plus the reader's time to read the same step's data
  // (SharedRead), and all ranks use the same flavour while measuring (they make the same
  // sequence of decisions). Stores below 16 KiB (1 KiB for kRootCopy) always use plain stores.
  // Readers do not need to know how the bytes were written.
  //   { ShmGroup::SharedStore store(g, ShmGroup::kCopy, bytes);
  //     CopyFast(slot, in, bytes, store.stream()); }
  //   ... WaitAll ...
  //   { ShmGroup::SharedRead read(g, ShmGroup::kCopy); CopyFast(out, peer_slot, bytes); }
  // kRootCopy: stores only one rank makes (a broadcast's root); nobody times reads of them, so
  // that rank's own store time decides, for itself.
  enum StoreKind { kCopy, kReduce, kRootCopy };
  static constexpr int kStoreKinds = 3;
  class SharedStore {
   public:
    SharedStore(ShmGroup& g, StoreKind kind, int64_t bytes);
    ~SharedStore();
    SharedStore(const SharedStore&) = delete;
    SharedStore& operator=(const SharedStore&) = delete;
    bool stream() const { return stream_; }

   private:
    ShmGroup& g_;
    StoreKind kind_;
    int64_t bytes_;
    bool timed_;
    bool stream_;
    int size_class_ = 0;  // of bytes_, once timed
    std::chrono::steady_clock::time_point start_;
  };
  class SharedRead {
   public:
    SharedRead(ShmGroup& g, StoreKind kind)
        : g_(g), kind_(kind), start_(std::chrono::steady_clock::now()) {}
    ~SharedRead();
    SharedRead(const SharedRead&) = delete;
    SharedRead& operator=(const SharedRead&) = delete;

   private:
    ShmGroup& g_;
    StoreKind kind_;
    std::chrono::steady_clock::time_point start_;
  };

  // Makes this rank's slot (kArrived) or result segment (kReduced) of step `number` visible.
  void Publish(Flag flag, uint64_t number) {
    std::atomic_ref<uint64_t>(FlagWord(flag, rank_, number))
        .store(number, std::memory_order_release);
  }
  // Waits until every rank published `flag` for step `number`. DeadlineExceeded "waiting for
  // rank(s) 1, 3 (...)" naming the ranks whose flag is behind; Aborted naming a rank whose process
  // exited while it was awaited (checked every kLivenessEvery); Suspended() if `wait` gave up.
  absl::Status WaitAll(Flag flag, uint64_t number, ShmWait& wait) const;

 private:
  static constexpr uint64_t kFlagSlots = 1024;  // flags indexed by step % kFlagSlots
  static constexpr std::chrono::milliseconds kLivenessEvery{10};
  static constexpr size_t kAlign = 64;
  static constexpr size_t kStepGap = 1024;  // unused bytes after each reservation (NextStep)
  static_assert(4 * kStepGap <= 16384, "the smallest ring (LOOM_SHM_RING_BYTES) holds 4 gaps");

  ShmGroup() = default;
  uint64_t& FlagWord(Flag flag, int r, uint64_t number) const {
    const size_t index =
        ((static_cast<size_t>(flag) * size_ + r) * kFlagSlots + number % kFlagSlots) * 64;
    return *reinterpret_cast<uint64_t*>(base_ + index);
  }
  bool Reached(Flag flag, int r, uint64_t number) const {
    return std::atomic_ref<uint64_t>(FlagWord(flag, r, number)).load(std::memory_order_acquire) >=
           number;
  }

  // Measured cost (ns per byte) of plain [0] and non-temporal [1] shared stores: the minimum of
  // the last kWindow samples (noise only ever adds time).
  static constexpr int kWindow = 8;
  struct StoreStats {
    double recent[2][kWindow] = {};
    int samples[2] = {0, 0};
    double Cost(int flavour) const;
    uint64_t decisions = 0;
    // The last timed store, until its step's read is added (or the next store arrives).
    bool pending_stream = false;
    double pending_ns = 0;
    int64_t pending_bytes = 0;
    void Add(bool stream, double ns, int64_t bytes);
    bool own_verdict = false;  // kRootCopy: this rank's verdict (1 = non-temporal), not shared
  };
  // Per kind and size class (log2 of the bytes, from 16 KiB; from 1 KiB for kRootCopy): costs per
  // byte differ by size.
  static constexpr int kSizeClasses = 14;
  StoreStats store_stats_[kStoreKinds][kSizeClasses];
  int pending_class_[kStoreKinds] = {-1, -1, -1};  // the class whose store awaits its read
  // Rank 0's verdict (1 = non-temporal) per kind and size class, shared by all ranks (kCopy,
  // kReduce; kRootCopy keeps its verdict per rank in StoreStats::own_verdict).
  uint8_t& Policy(StoreKind kind, int size_class) const {
    return *reinterpret_cast<uint8_t*>(base_ + policy_offset_ + kind * kSizeClasses + size_class);
  }
  size_t policy_offset_ = 0;
  static int SizeClass(StoreKind kind, int64_t bytes);
  Config::SharedStores shared_stores_ = Config::kAuto;

  std::unique_ptr<ShmSegment> segment_;
  char* base_ = nullptr;
  int rank_ = 0;
  int size_ = 1;
  std::vector<pid_t> pids_;  // every rank's process
  // Aborted naming the first rank behind `step` whose process has exited; OK if none.
  absl::Status CheckPeersAlive(Flag flag, uint64_t step) const;
  bool oversubscribed_ = false;
  int64_t stream_min_bytes_ = 0;
  int64_t ring_bytes_ = 0;
  int64_t max_step_bytes_ = 0;
  size_t ring_stride_ = 0;
  size_t slots_offset_ = 0;
  size_t result_offset_ = 0;
  uint64_t step_ = 0;
  size_t position_ = 0;  // where the next reservation starts
};

}  // namespace loom::comm
