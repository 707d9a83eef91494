#include "comm/shm/shm_group.h"

#include <unistd.h>

#include <algorithm>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "comm/mpi/mpi_util.h"
#include "comm/process_liveness.h"
#include "comm/spin_wait.h"
#include "runtime/base/check.h"
#include "runtime/base/status_macros.h"

namespace loom::comm {
namespace {

constexpr size_t kPage = 4096;
constexpr int64_t kMinTimedStore = 16 << 10;
// A broadcast root's stores are timed from 1 KiB: it alone decides, and plain stores of a few KiB
// already cost 4x MPI's broadcast where the cores sit on different L3s.
constexpr int64_t kMinTimedRootStore = 1 << 10;
constexpr uint64_t kExploreEvery = 128;  // re-measure the other flavour now and then

int64_t MinTimed(ShmGroup::StoreKind kind) {
  return kind == ShmGroup::kRootCopy ? kMinTimedRootStore : kMinTimedStore;
}

size_t RoundUp(size_t n, size_t to) { return (n + to - 1) / to * to; }

}  // namespace

absl::Status Suspended() {
  return absl::UnavailableError("suspended (resumed by the progress thread)");
}

absl::StatusOr<std::unique_ptr<ShmGroup>> ShmGroup::Create(MPI_Comm comm, const Config& config) {
  std::unique_ptr<ShmGroup> g(new ShmGroup());
  {
    std::unique_lock<std::mutex> lock = mpi_detail::LockMpi();
    MPI_Comm_rank(comm, &g->rank_);
    MPI_Comm_size(comm, &g->size_);
    const int pid = static_cast<int>(::getpid());
    std::vector<int> pids(g->size_);
    MPI_Allgather(&pid, 1, MPI_INT, pids.data(), 1, MPI_INT, comm);
    g->pids_.assign(pids.begin(), pids.end());
  }
  const size_t n = static_cast<size_t>(g->size_);
  g->oversubscribed_ = SpinWait::Oversubscribed(g->size_);
  g->stream_min_bytes_ = config.stream_min_bytes;
  g->shared_stores_ = config.shared_stores;
  g->ring_bytes_ = static_cast<int64_t>(
      RoundUp(static_cast<size_t>(std::max<int64_t>(config.ring_bytes, 4 * kPage)), 4 * kAlign));
  g->max_step_bytes_ = static_cast<int64_t>(RoundUp(
      static_cast<size_t>(std::clamp<int64_t>(config.chunk_bytes, kAlign, g->ring_bytes_ / 4)),
      kAlign));
  if (g->max_step_bytes_ > g->ring_bytes_ / 4) g->max_step_bytes_ -= kAlign;
  // Layout: [2 flags × n ranks × kFlagSlots lines][n slot rings][the result ring], page-aligned.
  g->slots_offset_ = RoundUp(2 * n * kFlagSlots * 64, kPage);
  g->ring_stride_ = RoundUp(static_cast<size_t>(g->ring_bytes_), kPage);
  g->result_offset_ = g->slots_offset_ + n * g->ring_stride_;
  g->policy_offset_ = g->result_offset_ + g->ring_stride_;
  const size_t total = g->policy_offset_ + kPage;
  absl::StatusOr<std::unique_ptr<ShmSegment>> seg = ShmSegment::Create(comm, total, "comm");
  if (!seg.ok()) return seg.status();
  g->segment_ = std::move(seg).value();
  g->base_ = g->segment_->data();
  return g;
}

ShmStep ShmGroup::NextStep(int64_t bytes) {
  const size_t reserve = RoundUp(static_cast<size_t>(std::max<int64_t>(bytes, 0)), kAlign);
  LOOM_CHECK_LE(static_cast<int64_t>(reserve), MaxStepBytes()) << "shm step too large";
  // A reservation never wraps: one that does not fit before the end starts at 0. Since every
  // reservation is at most a quarter of the ring, it then cannot overlap the previous step's.
  // (The gaps below keep that true while the ring holds at least 4 of them: the minimum ring is
  // 16 KiB.) A step of no bytes past the end also starts at 0, so its offset stays in the ring.
  if (position_ + reserve > static_cast<size_t>(ring_bytes_) ||
      position_ >= static_cast<size_t>(ring_bytes_)) {
    position_ = 0;
  }
  const ShmStep step{++step_, position_};
  // A gap after each reservation: reading a small step's lines makes the reader's prefetcher fetch
  // the lines after them, which the writer's next steps would then have to take back (a
  // cross-core invalidation per line). Measured, 2 ranks, heap buffers: 512 B 0.41-0.53 ->
  // 0.29-0.31 µs, 2 KiB 0.71-0.85 -> 0.43-0.45, 4 KiB 0.80-0.90 -> 0.55-0.62 (1 and 2 KiB gaps
  // alike).
  position_ += reserve + (reserve > 0 ? kStepGap : 0);
  return step;
}

int ShmGroup::SizeClass(StoreKind kind, int64_t bytes) {
  int c = 0;
  for (int64_t b = MinTimed(kind) * 2; b <= bytes && c < kSizeClasses - 1; b *= 2) ++c;
  return c;
}

ShmGroup::SharedStore::SharedStore(ShmGroup& g, StoreKind kind, int64_t bytes)
    : g_(g), kind_(kind), bytes_(bytes), timed_(bytes >= MinTimed(kind)), stream_(false) {
  if (!timed_) return;
  if (g_.shared_stores_ != Config::kAuto) {
    stream_ = g_.shared_stores_ == Config::kStream;
    timed_ = false;
    return;
  }
  // All ranks use the same flavour, so each measures what it chose: every rank makes the same
  // decisions in the same order (same calls, same sizes), the first ones and every
  // kExploreEvery-th try a set flavour, and otherwise rank 0's verdict (shared) applies.
  size_class_ = SizeClass(kind, bytes);
  StoreStats& s = g_.store_stats_[kind_][size_class_];
  ++s.decisions;
  // A broadcast root's own verdict; the shared one (rank 0's) for the symmetric kinds.
  const bool best = kind_ == kRootCopy ? s.own_verdict
                                       : std::atomic_ref<uint8_t>(g_.Policy(kind_, size_class_))
                                                 .load(std::memory_order_relaxed) != 0;
  if (s.decisions <= 2) {
    stream_ = false;
  } else if (s.decisions <= 4) {
    stream_ = true;
  } else {
    stream_ = s.decisions % kExploreEvery == 0 ? !best : best;
  }
  start_ = std::chrono::steady_clock::now();
}

void ShmGroup::StoreStats::Add(bool stream, double ns, int64_t bytes) {
  const int i = stream ? 1 : 0;
  recent[i][samples[i] % kWindow] = ns / static_cast<double>(bytes);
  ++samples[i];
}

double ShmGroup::StoreStats::Cost(int flavour) const {
  const int n = std::min(samples[flavour], kWindow);
  return *std::min_element(recent[flavour], recent[flavour] + n);
}

ShmGroup::SharedStore::~SharedStore() {
  if (!timed_) return;
  const double ns =
      std::chrono::duration<double, std::nano>(std::chrono::steady_clock::now() - start_).count();
  if (kind_ == kRootCopy) {
    StoreStats& s = g_.store_stats_[kind_][size_class_];
    s.Add(stream_, ns, bytes_);
    if (s.samples[0] > 0 && s.samples[1] > 0) s.own_verdict = s.Cost(1) < s.Cost(0);
    return;
  }
  int& pending = g_.pending_class_[kind_];
  if (pending >= 0) {  // a store nobody read back: count its store time alone
    StoreStats& old = g_.store_stats_[kind_][pending];
    old.Add(old.pending_stream, old.pending_ns, old.pending_bytes);
  }
  pending = size_class_;
  StoreStats& s = g_.store_stats_[kind_][pending];
  s.pending_stream = stream_;
  s.pending_ns = ns;
  s.pending_bytes = bytes_;
}

ShmGroup::SharedRead::~SharedRead() {
  int& pending = g_.pending_class_[kind_];
  if (pending < 0) return;
  StoreStats& s = g_.store_stats_[kind_][pending];
  const double ns =
      std::chrono::duration<double, std::nano>(std::chrono::steady_clock::now() - start_).count();
  s.Add(s.pending_stream, s.pending_ns + ns, s.pending_bytes);
  if (g_.rank_ == 0 && s.samples[0] > 0 && s.samples[1] > 0) {
    std::atomic_ref<uint8_t>(g_.Policy(kind_, pending))
        .store(s.Cost(1) < s.Cost(0) ? 1 : 0, std::memory_order_relaxed);
  }
  pending = -1;
}

absl::Status ShmGroup::CheckPeersAlive(Flag flag, uint64_t step) const {
  for (int r = 0; r < size_; ++r) {
    if (r == rank_ || Reached(flag, r, step) || !ProcessExited(pids_[r])) continue;
    return absl::AbortedError(absl::StrCat("rank ", r, " (pid ", pids_[r],
                                           " on this host) has exited while this rank waited for "
                                           "it (step ",
                                           step, " of this communicator)"));
  }
  return absl::OkStatus();
}

absl::Status ShmGroup::WaitAll(Flag flag, uint64_t step, ShmWait& wait) const {
  int next = 0;  // ranks below `next` have reached `step`
  auto advance = [&] {
    while (next < size_ && (next == rank_ || Reached(flag, next, step))) ++next;
    return next == size_;
  };
  if (advance()) return absl::OkStatus();
  SpinWait spin(wait.deadline, wait.give_up_at, oversubscribed_);
  std::chrono::nanoseconds next_liveness = kLivenessEvery;
  for (;;) {
    const SpinWait::Verdict v = spin.Pause();
    if (advance()) return absl::OkStatus();
    if (spin.elapsed() >= next_liveness) {
      next_liveness = spin.elapsed() + kLivenessEvery;
      LOOM_RETURN_IF_ERROR(CheckPeersAlive(flag, step));
    }
    if (v == SpinWait::kGaveUp) {
      wait.suspended = true;
      return Suspended();
    }
    if (v == SpinWait::kTimedOut) break;
  }
  std::vector<int> behind;
  for (int r = 0; r < size_; ++r) {
    if (r != rank_ && !Reached(flag, r, step)) behind.push_back(r);
  }
  return absl::DeadlineExceededError(
      absl::StrCat("waiting for rank(s) ", absl::StrJoin(behind, ", "), " (their ",
                   flag == kArrived ? "arrival" : "reduced-segment",
                   " flags have not reached step ", step, " of this communicator)"));
}

}  // namespace loom::comm
