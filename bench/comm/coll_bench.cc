// Collective benchmark in the style of nccl-tests, run under mpirun: for every size, loom's `shm`
// backend, loom's `mpi` backend (MPI's non-blocking collectives behind loom's Communicator) and
// MPI's own blocking call (MPI_Allreduce, ...) run interleaved in the same process on the same
// buffers, so noise and drift hit all of them alike. Correctness is checked before timing.
//
//   timeout 600 mpirun --allow-run-as-root -np 2 build/bench/coll_bench --op allreduce
//       --min_bytes 8 --max_bytes 64M --json allreduce.json        (one command line)
//   ... --idle_seconds 2        progress-thread CPU while idle (getrusage), no sweep
//   ... --overlap_bytes 32M     compute alone, all-reduce alone, both at once: overlap ratio
//   ... --buffers auto|arena|heap
//                               where the buffers (the same for every contender, MPI's call
//                               included) live: arena = the shm communicator's shared arena
//                               (loom's collective buffers, as data parallelism allocates them:
//                               loom's all-gather writes straight into the peers' outputs, small
//                               all-reduces read inputs in place), heap = ordinary memory (loom
//                               stages through its rings), auto (default) = arena when a shm
//                               contender has one (LOOM_SHM_ARENA_BYTES=0 turns it off), else heap.
//                               --registered is --buffers arena.
//   ... --backends ring,hier,mpi,MPI
//                               the contenders (default shm,mpi,MPI); ring and hier run across
//                               hosts, e.g. on a posed cluster (scripts/posed_cluster.sh).
//   ... --device cuda --backends nccl,shm
//                               buffers on the GPU (runtime::OpenDevice): nccl moves them with
//                               NCCL (a GPU per rank), the host backends stage them through host
//                               memory (ranks may share a GPU); not with MPI's own calls, which
//                               take host buffers, nor with --idle_seconds / --overlap_bytes.
//                               Inputs are prepared and results checked on the host, copied over.
//
// Columns: size (bytes as nccl-tests counts them: the whole array for reducescatter, allgather and
// alltoall), count (elements per rank's block), backend, time_us (mean per call, averaged over
// ranks; median of --cycles interleaved rounds), algbw = size / time (GB = 1e9 B), busbw = algbw ×
// factor (allreduce 2(n-1)/n, reducescatter / allgather / alltoall (n-1)/n, broadcast 1), #wrong
// (elements differing from the exact expected values; inputs are small integers so every
// reduction order is exact), speedup = MPI's blocking time / this time. bf16/f16 through MPI's
// blocking call convert to f32 and back around it (MPI has no 16-bit floats), timed.
#include <mpi.h>
#include <sys/resource.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <map>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "comm/mpi/mpi_env.h"
#include "comm/world.h"
#include "nlohmann/json.hpp"
#include "runtime/base/check.h"
#include "runtime/device_open.h"
#include "runtime/tensor.h"

namespace loom::comm {
namespace {

using runtime::DType;
using runtime::MemoryTag;
using runtime::Tensor;
using Clock = std::chrono::steady_clock;

enum class Op { kAllReduce, kReduceScatter, kAllGather, kAllToAll, kAllToAllV, kBroadcast };

struct Flags {
  Op op = Op::kAllReduce;
  std::string op_name = "allreduce";
  int64_t min_bytes = 8;
  int64_t max_bytes = 64 << 20;
  int iters = 0;  // 0: adaptive (about --target_ms per round, 3..2000)
  int warmup = 5;
  int cycles = 5;
  double target_ms = 30;
  DType dtype = DType::kF32;
  std::string json;
  std::vector<std::string> backends = {"shm", "mpi", "MPI"};
  bool odd_counts = true;
  double idle_seconds = 0;
  int64_t overlap_bytes = 0;
  std::string buffers = "auto";  // auto | arena | heap
  std::string device = "cpu";    // cpu | cuda: where the timed buffers are
  // alltoallv: rank r sends to rank j a share of its count·n elements proportional to
  // (1 + (j - r) mod n)^-skew (0: uniform, as alltoall; 1: Zipf-like, a hot destination per
  // sender, as MoE dispatch with popular experts).
  double skew = 0;
};

[[noreturn]] void Usage(const std::string& error) {
  int rank = 0;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  if (rank == 0) {
    std::fprintf(stderr,
                 "coll_bench: %s\nusage: coll_bench --op allreduce|reducescatter|allgather|"
                 "alltoall|alltoallv|broadcast [--skew S] [--min_bytes 8] [--max_bytes 64M] "
                 "[--iters N] [--warmup 5] "
                 "[--cycles 5] [--dtype f32|bf16|f16|i32] [--backends shm,mpi,ring,hier,nccl,MPI] "
                 "[--no_odd_counts] [--json FILE] [--idle_seconds S] [--overlap_bytes B] "
                 "[--buffers auto|arena|heap] [--device cpu|cuda]\n",
                 error.c_str());
  }
  MPI_Abort(MPI_COMM_WORLD, 2);
  std::abort();
}

int64_t ParseBytes(const std::string& s) {
  int64_t scale = 1;
  std::string digits = s;
  if (!s.empty()) {
    switch (s.back()) {
      case 'K':
      case 'k':
        scale = int64_t{1} << 10;
        break;
      case 'M':
      case 'm':
        scale = int64_t{1} << 20;
        break;
      case 'G':
      case 'g':
        scale = int64_t{1} << 30;
        break;
    }
    if (scale != 1) digits.pop_back();
  }
  int64_t v = 0;
  if (!absl::SimpleAtoi(digits, &v) || v < 0) Usage(absl::StrCat("bad byte count '", s, "'"));
  return v * scale;
}

Flags ParseFlags(int argc, char** argv) {
  Flags f;
  for (int i = 1; i < argc; ++i) {
    std::string arg = argv[i];
    std::string value;
    const size_t eq = arg.find('=');
    auto next = [&]() -> std::string {
      if (eq != std::string::npos) return arg.substr(eq + 1);
      if (i + 1 >= argc) Usage(absl::StrCat(arg, " needs a value"));
      return argv[++i];
    };
    const std::string key = arg.substr(0, eq);
    if (key == "--op") {
      f.op_name = next();
      static const std::map<std::string, Op> ops = {
          {"allreduce", Op::kAllReduce}, {"reducescatter", Op::kReduceScatter},
          {"allgather", Op::kAllGather}, {"alltoall", Op::kAllToAll},
          {"alltoallv", Op::kAllToAllV}, {"broadcast", Op::kBroadcast}};
      auto it = ops.find(f.op_name);
      if (it == ops.end()) Usage(absl::StrCat("unknown --op ", f.op_name));
      f.op = it->second;
    } else if (key == "--min_bytes") {
      f.min_bytes = ParseBytes(next());
    } else if (key == "--max_bytes") {
      f.max_bytes = ParseBytes(next());
    } else if (key == "--iters") {
      f.iters = static_cast<int>(ParseBytes(next()));
    } else if (key == "--warmup") {
      f.warmup = static_cast<int>(ParseBytes(next()));
    } else if (key == "--cycles") {
      f.cycles = std::max<int>(1, static_cast<int>(ParseBytes(next())));
    } else if (key == "--target_ms") {
      f.target_ms = static_cast<double>(ParseBytes(next()));
    } else if (key == "--dtype") {
      const std::string d = next();
      if (d == "f32") {
        f.dtype = DType::kF32;
      } else if (d == "bf16") {
        f.dtype = DType::kBF16;
      } else if (d == "f16") {
        f.dtype = DType::kF16;
      } else if (d == "i32") {
        f.dtype = DType::kI32;
      } else {
        Usage(absl::StrCat("unknown --dtype ", d, "; choose f32, bf16, f16 or i32"));
      }
    } else if (key == "--json") {
      f.json = next();
    } else if (key == "--backends") {
      f.backends = absl::StrSplit(next(), ',', absl::SkipEmpty());
      for (const std::string& b : f.backends) {
        const std::string base = b.substr(0, b.find('@'));
        if (base != "shm" && base != "mpi" && base != "ring" && base != "hier" && b != "MPI") {
          Usage(absl::StrCat("unknown backend ", b, "; choose from shm, mpi, ring, hier, MPI"));
        }
      }
    } else if (key == "--no_odd_counts") {
      f.odd_counts = false;
    } else if (key == "--registered") {
      f.buffers = "arena";
    } else if (key == "--buffers") {
      f.buffers = next();
      if (f.buffers != "auto" && f.buffers != "arena" && f.buffers != "heap") {
        Usage(absl::StrCat("--buffers must be auto, arena or heap, not ", f.buffers));
      }
    } else if (key == "--idle_seconds") {
      if (!absl::SimpleAtod(next(), &f.idle_seconds)) Usage("bad --idle_seconds");
    } else if (key == "--skew") {
      if (!absl::SimpleAtod(next(), &f.skew) || f.skew < 0) Usage("bad --skew (>= 0)");
    } else if (key == "--overlap_bytes") {
      f.overlap_bytes = ParseBytes(next());
    } else if (key == "--device") {
      f.device = next();
      if (f.device != "cpu" && f.device != "cuda") {
        Usage(absl::StrCat("--device must be cpu or cuda, not ", f.device));
      }
    } else {
      Usage(absl::StrCat("unknown flag ", arg));
    }
  }
  return f;
}

// ---- the operation, its sizes and exact expected values ----

// nccl-tests' bus bandwidth factor.
double BusFactor(Op op, int n) {
  switch (op) {
    case Op::kAllReduce:
      return 2.0 * (n - 1) / n;
    case Op::kBroadcast:
      return 1.0;
    default:
      return static_cast<double>(n - 1) / n;
  }
}

// Elements in one rank's input, its output and the byte size nccl-tests reports, for `count`
// elements per block.
struct CallShape {
  int64_t count = 0;  // allreduce / broadcast: the buffer; others: one rank's block
  int64_t in = 0;
  int64_t out = 0;
  int64_t bytes = 0;
  // alltoallv: elements rank q sends to rank j, sends[q][j] (every rank knows the whole matrix).
  std::vector<std::vector<int64_t>> sends = {};
};

// alltoallv's count matrix: each rank sends count·n elements in all, split over the
// destinations by the --skew weights (the rounding remainder to the heaviest).
std::vector<std::vector<int64_t>> SkewedSends(int64_t count, int n, double skew) {
  std::vector<std::vector<int64_t>> sends(n, std::vector<int64_t>(n, 0));
  for (int q = 0; q < n; ++q) {
    double total = 0;
    for (int d = 0; d < n; ++d) total += std::pow(1.0 + d, -skew);
    int64_t given = 0;
    for (int d = 1; d < n; ++d) {
      const int64_t c = static_cast<int64_t>(count * n * std::pow(1.0 + d, -skew) / total);
      sends[q][(q + d) % n] = c;
      given += c;
    }
    sends[q][q] = count * n - given;  // distance 0: the heaviest share
  }
  return sends;
}

CallShape ShapeOf(Op op, int64_t count, int n, size_t es, int r = 0, double skew = 0) {
  switch (op) {
    case Op::kAllToAllV: {
      CallShape s{count, count * n, 0, count * n * static_cast<int64_t>(es),
                  SkewedSends(count, n, skew)};
      for (int q = 0; q < n; ++q) s.out += s.sends[q][r];
      return s;
    }
    case Op::kAllReduce:
    case Op::kBroadcast:
      return {count, count, count, count * static_cast<int64_t>(es)};
    case Op::kReduceScatter:
      return {count, count * n, count, count * n * static_cast<int64_t>(es)};
    case Op::kAllGather:
      return {count, count, count * n, count * n * static_cast<int64_t>(es)};
    case Op::kAllToAll:
      return {count, count * n, count * n, count * n * static_cast<int64_t>(es)};
  }
  return {};
}

// Rank r's input element i: a small integer, exact in every dtype and every reduction order.
double Value(int r, int64_t i, int seed) { return r + (i + seed) % 5 + 1; }

double Expected(Op op, int64_t i, int r, int n, int64_t count, int seed) {
  switch (op) {
    case Op::kAllReduce: {
      double s = 0;
      for (int q = 0; q < n; ++q) s += Value(q, i, seed);
      return s;
    }
    case Op::kReduceScatter: {
      double s = 0;
      for (int q = 0; q < n; ++q) s += Value(q, r * count + i, seed);
      return s;
    }
    case Op::kAllGather:
      return Value(static_cast<int>(i / count), i % count, seed);
    case Op::kAllToAll:
      return Value(static_cast<int>(i / count), r * count + i % count, seed);
    case Op::kBroadcast:
      return Value(0, i, seed);
    case Op::kAllToAllV:
      break;  // ExpectedAllToAllV
  }
  return 0;
}

// alltoallv: element i of rank r's output, from the source whose block holds it, at its offset
// within what that source sent to r.
double ExpectedAllToAllV(const CallShape& s, int64_t i, int r, int seed) {
  for (size_t q = 0; q < s.sends.size(); ++q) {
    if (i < s.sends[q][r]) {
      int64_t offset = 0;  // where q's block for r starts in q's input
      for (int j = 0; j < r; ++j) offset += s.sends[q][j];
      return Value(static_cast<int>(q), offset + i, seed);
    }
    i -= s.sends[q][r];
  }
  return -1;
}

void Store(Tensor& t, int64_t i, double v) {
  switch (t.dtype()) {
    case DType::kI32:
      t.data<int32_t>()[i] = static_cast<int32_t>(v);
      return;
    case DType::kF32:
      t.data<float>()[i] = static_cast<float>(v);
      return;
    default: {
      const float f = static_cast<float>(v);
      runtime::ConvertBuffer(&f, DType::kF32,
                             static_cast<char*>(t.raw_data()) + i * runtime::DTypeSize(t.dtype()),
                             t.dtype(), 1);
    }
  }
}

double Load(const Tensor& t, int64_t i) {
  switch (t.dtype()) {
    case DType::kI32:
      return t.data<int32_t>()[i];
    default:
      return runtime::LoadAsF32(t.raw_data(), t.dtype(), i);
  }
}

// ---- the three contenders ----

class Contender {
 public:
  virtual ~Contender() = default;
  virtual std::string name() const = 0;
  // One call on (in, out), blocking until it completed.
  virtual void Run(Op op, const CallShape& s, Tensor& in, Tensor& out) = 0;
};

class LoomContender : public Contender {
 public:
  LoomContender(std::string label, std::unique_ptr<Communicator> comm)
      : label_(std::move(label)), comm_(std::move(comm)) {}
  std::string name() const override { return label_; }
  Communicator& comm() { return *comm_; }

  void Run(Op op, const CallShape& shape, Tensor& in, Tensor& out) override {
    std::shared_ptr<Work> w;
    switch (op) {
      case Op::kAllReduce:
        w = comm_->AllReduce(in, out, ReduceOp::kSum);
        break;
      case Op::kReduceScatter:
        w = comm_->ReduceScatter(in, out, ReduceOp::kSum);
        break;
      case Op::kAllGather:
        w = comm_->AllGather(in, out);
        break;
      case Op::kAllToAll:
        w = comm_->AllToAll(in, out);
        break;
      case Op::kAllToAllV: {
        const int r = comm_->rank(), n = comm_->size();
        std::vector<int64_t> recv(n);
        for (int q = 0; q < n; ++q) recv[q] = shape.sends[q][r];
        w = comm_->AllToAllV(in.Slice(0, shape.in), shape.sends[r], out, recv);
        break;
      }
      case Op::kBroadcast:
        w = comm_->Broadcast(out, 0);
        break;
    }
    const absl::Status s = w->Wait();
    LOOM_CHECK(s.ok()) << label_ << ": " << s;
  }

 private:
  std::string label_;
  std::unique_ptr<Communicator> comm_;
};

// MPI's own blocking collectives on MPI_COMM_WORLD.
class MpiContender : public Contender {
 public:
  std::string name() const override { return "MPI"; }

  void Run(Op op, const CallShape& s, Tensor& in, Tensor& out) override {
    const DType dt = in.dtype();
    const bool half = dt == DType::kBF16 || dt == DType::kF16;
    const MPI_Datatype type = half ? MPI_FLOAT : dt == DType::kI32 ? MPI_INT32_T : MPI_FLOAT;
    const void* src = in.raw_data();
    void* dst = out.raw_data();
    if (half) {
      in32_.resize(s.in);
      out32_.resize(s.out);
      runtime::ConvertBuffer(in.raw_data(), dt, in32_.data(), DType::kF32, s.in);
      if (op == Op::kBroadcast)
        runtime::ConvertBuffer(out.raw_data(), dt, out32_.data(), DType::kF32, s.out);
      src = in32_.data();
      dst = out32_.data();
    }
    const int c = static_cast<int>(s.count);
    switch (op) {
      case Op::kAllReduce:
        MPI_Allreduce(src, dst, c, type, MPI_SUM, MPI_COMM_WORLD);
        break;
      case Op::kReduceScatter:
        MPI_Reduce_scatter_block(src, dst, c, type, MPI_SUM, MPI_COMM_WORLD);
        break;
      case Op::kAllGather:
        MPI_Allgather(src, c, type, dst, c, type, MPI_COMM_WORLD);
        break;
      case Op::kAllToAll:
        MPI_Alltoall(src, c, type, dst, c, type, MPI_COMM_WORLD);
        break;
      case Op::kAllToAllV: {
        int r = 0, n = 0;
        MPI_Comm_rank(MPI_COMM_WORLD, &r);
        MPI_Comm_size(MPI_COMM_WORLD, &n);
        std::vector<int> sc(n), sd(n), rc(n), rd(n);
        for (int j = 0, so = 0, ro = 0; j < n; ++j) {
          sc[j] = static_cast<int>(s.sends[r][j]);
          rc[j] = static_cast<int>(s.sends[j][r]);
          sd[j] = so;
          rd[j] = ro;
          so += sc[j];
          ro += rc[j];
        }
        MPI_Alltoallv(src, sc.data(), sd.data(), type, dst, rc.data(), rd.data(), type,
                      MPI_COMM_WORLD);
        break;
      }
      case Op::kBroadcast:
        MPI_Bcast(dst, c, type, 0, MPI_COMM_WORLD);
        break;
    }
    if (half) runtime::ConvertBuffer(out32_.data(), DType::kF32, out.raw_data(), dt, s.out);
  }

 private:
  std::vector<float> in32_, out32_;
};

// ---- measurement ----

double Now() { return std::chrono::duration<double>(Clock::now().time_since_epoch()).count(); }

double MeanOverRanks(double v, int n) {
  double sum = 0;
  MPI_Allreduce(&v, &sum, 1, MPI_DOUBLE, MPI_SUM, MPI_COMM_WORLD);
  return sum / n;
}

double MaxOverRanks(double v) {
  double m = 0;
  MPI_Allreduce(&v, &m, 1, MPI_DOUBLE, MPI_MAX, MPI_COMM_WORLD);
  return m;
}

int64_t SumOverRanks(int64_t v) {
  int64_t s = 0;
  MPI_Allreduce(&v, &s, 1, MPI_INT64_T, MPI_SUM, MPI_COMM_WORLD);
  return s;
}

// Fills inputs (and the root's broadcast buffer) for `seed`, poisons outputs.
void Prepare(Op op, const CallShape& s, Tensor& in, Tensor& out, int r, int seed) {
  for (int64_t i = 0; i < s.in; ++i) Store(in, i, Value(r, i, seed));
  for (int64_t i = 0; i < s.out; ++i) Store(out, i, -77.0);
  if (op == Op::kBroadcast && r == 0) {
    for (int64_t i = 0; i < s.out; ++i) Store(out, i, Value(0, i, seed));
  }
}

int64_t CountWrong(Op op, const CallShape& s, const Tensor& out, int r, int n, int seed) {
  int64_t wrong = 0;
  for (int64_t i = 0; i < s.out; ++i) {
    const double want = op == Op::kAllToAllV ? ExpectedAllToAllV(s, i, r, seed)
                                             : Expected(op, i, r, n, s.count, seed);
    if (Load(out, i) != want) ++wrong;
  }
  return wrong;
}

struct Row {
  int64_t bytes, count;
  std::string backend;
  double time_us, algbw, busbw;
  int64_t wrong;
  double speedup;
};

std::vector<int64_t> Counts(const Flags& f, int n, size_t es) {
  std::vector<int64_t> counts;
  const int64_t per = f.op == Op::kAllReduce || f.op == Op::kBroadcast ? 1 : n;
  for (int64_t b = std::max<int64_t>(f.min_bytes, 1); b <= f.max_bytes; b *= 2) {
    const int64_t c = b / static_cast<int64_t>(es * per);
    if (c >= 1 && (counts.empty() || counts.back() != c)) counts.push_back(c);
  }
  if (f.odd_counts) {
    // 2^k + 3 elements: uneven n-way splits and tails, within the sweep's range.
    for (int64_t c : {int64_t{1} << 8, int64_t{1} << 14, int64_t{1} << 20}) {
      const int64_t odd = c + 3;
      const int64_t bytes = odd * static_cast<int64_t>(es * per);
      if (bytes >= f.min_bytes && bytes <= f.max_bytes) counts.push_back(odd);
    }
    std::sort(counts.begin(), counts.end());
  }
  return counts;
}

// The GPU's allocator for --device cuda (nullptr for cpu), or a usage error saying what cannot run.
runtime::Allocator* OpenBenchDevice(const Flags& f, int rank) {
  if (f.device == "cpu") return nullptr;
  if (f.idle_seconds > 0 || f.overlap_bytes > 0) {
    Usage("--device cuda runs the size sweep only (no --idle_seconds, --overlap_bytes)");
  }
  if (std::find(f.backends.begin(), f.backends.end(), "MPI") != f.backends.end()) {
    Usage("MPI's own calls take host buffers: leave MPI out of --backends with --device cuda");
  }
  absl::StatusOr<runtime::OpenedDevice> opened = runtime::OpenDevice("cuda");
  if (!opened.ok()) Usage(std::string(opened.status().message()));
  if (rank == 0) std::printf("# device: %s\n", opened->description.c_str());
  return opened->allocator;
}

int Main(int argc, char** argv) {
  absl::StatusOr<MpiEnvironment*> env = MpiEnvironment::Init(&argc, &argv);
  if (!env.ok()) {
    std::fprintf(stderr, "coll_bench: %s\n", std::string(env.status().message()).c_str());
    return 1;
  }
  const Flags f = ParseFlags(argc, argv);
  const int r = (*env)->world_rank(), n = (*env)->world_size();
  const size_t es = runtime::DTypeSize(f.dtype);
  runtime::Allocator* const device = OpenBenchDevice(f, r);

  std::vector<std::unique_ptr<Contender>> contenders;
  for (const std::string& b : f.backends) {
    if (b == "MPI") {
      contenders.push_back(std::make_unique<MpiContender>());
    } else {
      // "shm@LOOM_SHM_RING_BYTES=65536:LOOM_COMM_INLINE_BYTES=0": a variant built with those
      // environment settings, for side-by-side tuning in one run.
      const std::vector<std::string> parts = absl::StrSplit(b, '@');
      std::vector<std::string> settings;
      if (parts.size() > 1) settings = absl::StrSplit(parts[1], ':', absl::SkipEmpty());
      for (const std::string& kv : settings) {
        const size_t eq = kv.find('=');
        if (eq == std::string::npos) Usage(absl::StrCat("bad setting ", kv, " in ", b));
        setenv(kv.substr(0, eq).c_str(), kv.substr(eq + 1).c_str(), 1);
      }
      absl::StatusOr<std::unique_ptr<Communicator>> c =
          MakeWorldCommunicator(parts[0], CommOptions::FromEnv());
      for (const std::string& kv : settings) unsetenv(kv.substr(0, kv.find('=')).c_str());
      if (!c.ok()) {
        std::fprintf(stderr, "coll_bench: %s backend: %s\n", b.c_str(),
                     std::string(c.status().message()).c_str());
        MPI_Abort(MPI_COMM_WORLD, 1);
      }
      contenders.push_back(std::make_unique<LoomContender>("loom_" + b, std::move(c).value()));
    }
  }
  nlohmann::json results = nlohmann::json::array();
  const char* single_copy = std::getenv("OMPI_MCA_btl_vader_single_copy_mechanism");
  if (r == 0) {
    std::printf("# coll_bench %s%s  ranks %d  dtype %s  cores %ld  %s  (vader single copy: %s)\n",
                f.op_name.c_str(),
                f.op == Op::kAllToAllV ? absl::StrFormat(" (skew %g)", f.skew).c_str() : "", n,
                std::string(runtime::DTypeName(f.dtype)).c_str(), sysconf(_SC_NPROCESSORS_ONLN),
                (*env)->library_version().c_str(),
                single_copy == nullptr ? "default" : single_copy);
    const CommOptions options = CommOptions::FromEnv();
    std::printf("# MPI thread level %s; loom inline fast path up to %ld B (alltoallv %ld B)\n",
                (*env)->thread_multiple() ? "MPI_THREAD_MULTIPLE" : "MPI_THREAD_SERIALIZED",
                static_cast<long>(options.inline_max_bytes),
                static_cast<long>(options.inline_exchange_max_bytes));
    std::printf(
        "# iterations: %s, warmup %d, %d interleaved cycles (median), time averaged "
        "over ranks\n",
        f.iters > 0 ? absl::StrCat(f.iters).c_str() : "adaptive", f.warmup, f.cycles);
  }

  // ---- idle CPU of the progress threads ----
  if (f.idle_seconds > 0) {
    // Exercise every communicator first, so threads and MPI are fully warmed up.
    Tensor in = Tensor::Zeros({1 << 16}, f.dtype, MemoryTag::kComm);
    Tensor out = Tensor::Zeros({1 << 16}, f.dtype, MemoryTag::kComm);
    for (int64_t count : {int64_t{16}, int64_t{1} << 16, int64_t{1} << 20}) {
      in = Tensor::Zeros({count}, f.dtype, MemoryTag::kComm);
      out = Tensor::Zeros({count}, f.dtype, MemoryTag::kComm);
      const CallShape s = ShapeOf(Op::kAllReduce, count, n, es);
      for (auto& c : contenders) {
        for (int i = 0; i < 50; ++i) c->Run(Op::kAllReduce, s, in, out);
      }
    }
    MPI_Barrier(MPI_COMM_WORLD);
    rusage before, after;
    getrusage(RUSAGE_SELF, &before);
    const double t0 = Now();
    std::this_thread::sleep_for(std::chrono::duration<double>(f.idle_seconds));
    const double wall = Now() - t0;
    getrusage(RUSAGE_SELF, &after);
    auto seconds = [](const timeval& tv) { return tv.tv_sec + tv.tv_usec * 1e-6; };
    const double cpu = seconds(after.ru_utime) - seconds(before.ru_utime) +
                       seconds(after.ru_stime) - seconds(before.ru_stime);
    const double pct = 100.0 * cpu / wall;
    const double worst = MaxOverRanks(pct);
    if (r == 0) {
      const int loom_comms = static_cast<int>(std::count_if(
          f.backends.begin(), f.backends.end(), [](const std::string& b) { return b != "MPI"; }));
      std::printf(
          "# idle: %d loom communicator(s) idle for %.2f s: process CPU %.3f%% of a "
          "core (max over ranks; target <= 1%%)\n",
          loom_comms, wall, worst);
      results.push_back({{"op", "idle_cpu"}, {"seconds", wall}, {"cpu_percent_max", worst}});
    }
  }

  // ---- overlap of an all-reduce with computation ----
  if (f.overlap_bytes > 0) {
    LoomContender* loom = nullptr;
    for (auto& c : contenders) {
      if (c->name() == "loom_shm") loom = static_cast<LoomContender*>(c.get());
    }
    if (loom == nullptr) {
      for (auto& c : contenders) {
        if (c->name() != "MPI") loom = static_cast<LoomContender*>(c.get());
      }
    }
    LOOM_CHECK(loom != nullptr) << "--overlap_bytes needs a loom backend";
    const int64_t count = f.overlap_bytes / static_cast<int64_t>(es);
    Tensor grad = Tensor::Zeros({count}, f.dtype, MemoryTag::kComm);
    std::vector<float> work(1 << 15, 1.0f);  // 128 KiB: stays in L2, no memory traffic
    auto compute = [&](int64_t reps) {
      float acc = 0;
      for (int64_t k = 0; k < reps; ++k) {
        for (float& w : work) w = w * 0.999f + 0.001f;
        acc += work[k % work.size()];
      }
      return acc;
    };
    volatile float sink = 0;
    // Calibrate compute to take about as long as the all-reduce alone.
    auto time_allreduce = [&] {
      MPI_Barrier(MPI_COMM_WORLD);
      const double t0 = Now();
      LOOM_CHECK(loom->comm().AllReduce(grad, grad, ReduceOp::kSum)->Wait().ok());
      return MaxOverRanks(Now() - t0);
    };
    for (int i = 0; i < 3; ++i) time_allreduce();
    double t_comm = 1e30;
    for (int i = 0; i < 5; ++i) t_comm = std::min(t_comm, time_allreduce());
    double t0 = Now();
    sink = sink + compute(100);
    const double per_rep = (Now() - t0) / 100;
    int64_t reps = static_cast<int64_t>(MaxOverRanks(t_comm / per_rep));
    reps = std::max<int64_t>(reps, 1);
    double t_compute = 1e30, t_both = 1e30;
    for (int i = 0; i < 5; ++i) {
      MPI_Barrier(MPI_COMM_WORLD);
      t0 = Now();
      sink = sink + compute(reps);
      t_compute = std::min(t_compute, MaxOverRanks(Now() - t0));
      MPI_Barrier(MPI_COMM_WORLD);
      t0 = Now();
      std::shared_ptr<Work> w = loom->comm().AllReduce(grad, grad, ReduceOp::kSum);
      sink = sink + compute(reps);
      LOOM_CHECK(w->Wait().ok());
      t_both = std::min(t_both, MaxOverRanks(Now() - t0));
    }
    // 1: the shorter of the two was hidden completely; 0: they ran one after the other.
    const double hidden = t_comm + t_compute - t_both;
    const double ratio = std::max(0.0, hidden / std::min(t_comm, t_compute));
    if (r == 0) {
      std::printf(
          "# overlap (%s, %ld B all-reduce): compute alone %.2f ms, all-reduce alone "
          "%.2f ms, both %.2f ms; overlap ratio %.2f (1 = the shorter fully hidden)\n",
          loom->name().c_str(), static_cast<long>(f.overlap_bytes), t_compute * 1e3, t_comm * 1e3,
          t_both * 1e3, ratio);
      results.push_back({{"op", "overlap"},
                         {"backend", loom->name()},
                         {"bytes", f.overlap_bytes},
                         {"compute_ms", t_compute * 1e3},
                         {"allreduce_ms", t_comm * 1e3},
                         {"both_ms", t_both * 1e3},
                         {"overlap_ratio", ratio}});
    }
  }

  // ---- the size sweep ----
  const bool sweep = f.idle_seconds <= 0 && f.overlap_bytes <= 0;
  int64_t total_wrong = 0;
  if (sweep) {
    const std::vector<int64_t> counts = Counts(f, n, es);
    const int64_t max_in = counts.empty() ? 1 : ShapeOf(f.op, counts.back(), n, es).in;
    // alltoallv: a rank may receive up to every rank's whole input.
    const int64_t max_out =
        counts.empty() ? 1
                       : (f.op == Op::kAllToAllV ? n : 1) * ShapeOf(f.op, counts.back(), n, es).out;
    // Arena buffers come from the first loom communicator that has a shared arena.
    runtime::Allocator* buffers = nullptr;
    int arenas = 0;
    for (auto& c : contenders) {
      if (device != nullptr) break;  // the host buffers only prepare and check
      auto* loom = dynamic_cast<LoomContender*>(c.get());
      if (loom == nullptr || loom->comm().shared_allocator() == nullptr) continue;
      ++arenas;
      if (f.buffers != "heap" && buffers == nullptr) buffers = loom->comm().shared_allocator();
    }
    if (f.buffers == "arena" && buffers == nullptr) {
      Usage(
          "--buffers arena needs the shm backend with a shared arena (LOOM_SHM_ARENA_BYTES not "
          "0)");
    }
    const bool registered = buffers != nullptr;
    if (r == 0) {
      std::printf("# buffers: %s\n",
                  device != nullptr ? "device (copied from and to host buffers around the check)"
                  : registered      ? "arena (the shm communicator's shared arena)"
                                    : "heap (ordinary memory)");
      if (buffers != nullptr && arenas > 1) {
        std::printf(
            "# note: the buffers lie in the first shm contender's arena; the other shm "
            "contenders see them as ordinary memory and take their staged paths\n");
      }
      std::printf("%12s %12s %10s %12s %10s %10s %8s %8s\n", "size(B)", "count", "backend",
                  "time(us)", "algbw", "busbw", "#wrong", "speedup");
    }
    Tensor in_all = Tensor::Zeros({max_in}, f.dtype, MemoryTag::kComm, buffers);
    Tensor out_all = Tensor::Zeros({max_out}, f.dtype, MemoryTag::kComm, buffers);
    // --device cuda: the timed buffers are on the GPU; in_all and out_all prepare and check.
    Tensor device_in_all, device_out_all;
    if (device != nullptr) {
      device_in_all = Tensor::Zeros({max_in}, f.dtype, MemoryTag::kComm, device);
      device_out_all = Tensor::Zeros({max_out}, f.dtype, MemoryTag::kComm, device);
    }
    int seed = 0;
    for (int64_t count : counts) {
      const CallShape s = ShapeOf(f.op, count, n, es, r, f.skew);
      // Views of the first elements of the big buffers: the same memory for every backend.
      Tensor in = in_all.Slice(0, s.in);
      Tensor out = out_all.Slice(0, s.out);
      Tensor timed_in = device != nullptr ? device_in_all.Slice(0, s.in) : in;
      Tensor timed_out = device != nullptr ? device_out_all.Slice(0, s.out) : out;
      std::vector<int64_t> wrong(contenders.size());
      for (size_t b = 0; b < contenders.size(); ++b) {
        ++seed;
        Prepare(f.op, s, in, out, r, seed);
        if (device != nullptr) {
          timed_in.CopyFrom(in);
          timed_out.CopyFrom(out);
        }
        contenders[b]->Run(f.op, s, timed_in, timed_out);
        if (device != nullptr) out.CopyFrom(timed_out);
        wrong[b] = SumOverRanks(CountWrong(f.op, s, out, r, n, seed));
        total_wrong += wrong[b];
      }
      // Warm-up, and the iteration count every rank uses.
      double slowest = 0;
      for (auto& c : contenders) {
        MPI_Barrier(MPI_COMM_WORLD);
        const double t0 = Now();
        for (int i = 0; i < f.warmup; ++i) c->Run(f.op, s, timed_in, timed_out);
        slowest = std::max(slowest, (Now() - t0) / std::max(1, f.warmup));
      }
      slowest = MaxOverRanks(slowest);
      const int iters = f.iters > 0
                            ? f.iters
                            : static_cast<int>(std::clamp(
                                  f.target_ms * 1e-3 / std::max(slowest, 1e-9), 3.0, 2000.0));
      std::vector<std::vector<double>> times(contenders.size());
      for (int cycle = 0; cycle < f.cycles; ++cycle) {
        for (size_t b = 0; b < contenders.size(); ++b) {
          MPI_Barrier(MPI_COMM_WORLD);
          const double t0 = Now();
          for (int i = 0; i < iters; ++i) contenders[b]->Run(f.op, s, timed_in, timed_out);
          times[b].push_back(MeanOverRanks((Now() - t0) / iters, n));
        }
      }
      std::vector<double> median(contenders.size());
      double mpi_time = 0;
      for (size_t b = 0; b < contenders.size(); ++b) {
        std::sort(times[b].begin(), times[b].end());
        median[b] = times[b][times[b].size() / 2];
        if (contenders[b]->name() == "MPI") mpi_time = median[b];
      }
      for (size_t b = 0; b < contenders.size(); ++b) {
        Row row;
        row.bytes = s.bytes;
        row.count = count;
        row.backend = contenders[b]->name();
        row.time_us = median[b] * 1e6;
        row.algbw = s.bytes / median[b] / 1e9;
        row.busbw = row.algbw * BusFactor(f.op, n);
        row.wrong = wrong[b];
        row.speedup = mpi_time > 0 ? mpi_time / median[b] : 0;
        if (r == 0) {
          std::printf("%12ld %12ld %10s %12.2f %10.3f %10.3f %8ld %8.2f\n",
                      static_cast<long>(row.bytes), static_cast<long>(row.count),
                      row.backend.c_str(), row.time_us, row.algbw, row.busbw,
                      static_cast<long>(row.wrong), row.speedup);
          results.push_back({{"op", f.op_name},
                             {"bytes", row.bytes},
                             {"count", row.count},
                             {"dtype", runtime::DTypeName(f.dtype)},
                             {"ranks", n},
                             {"backend", row.backend},
                             {"time_us", row.time_us},
                             {"algbw", row.algbw},
                             {"busbw", row.busbw},
                             {"wrong", row.wrong},
                             {"speedup_vs_mpi", row.speedup},
                             {"buffers", device != nullptr ? "device"
                                         : registered      ? "arena"
                                                           : "heap"},
                             {"device", f.device},
                             {"registered_buffers", registered},
                             {"iters", iters}});
        }
      }
      std::fflush(stdout);
    }
    if (r == 0) {
      std::printf("# Out of bounds values : %ld %s\n", static_cast<long>(total_wrong),
                  total_wrong == 0 ? "OK" : "FAILED");
    }
  }
  if (r == 0 && !f.json.empty()) {
    std::ofstream out(f.json);
    out << results.dump(2) << "\n";
    if (!out) std::fprintf(stderr, "coll_bench: cannot write %s\n", f.json.c_str());
  }
  contenders.clear();  // communicators go before MPI is finalized (at exit)
  return total_wrong == 0 ? 0 : 1;
}

}  // namespace
}  // namespace loom::comm

int main(int argc, char** argv) { return loom::comm::Main(argc, argv); }
