#include "tests/comm/collective_checks.h"

#include <gtest/gtest.h>

#include <numeric>

#include "absl/strings/str_cat.h"

namespace loom::comm::testing {
namespace {

using runtime::DType;
using runtime::MemoryTag;
using runtime::Tensor;

constexpr DType kDTypes[] = {DType::kF32, DType::kBF16, DType::kF16, DType::kI32, DType::kI64};
constexpr double kPoison = -77.0;

double Value(int rank, int64_t i) { return (rank + 1) * static_cast<double>(i % 7 + 1); }

// The allocator of the sweep running on this thread (ranks of the local backend are threads).
thread_local runtime::Allocator* sweep_allocator = nullptr;

// A tensor of `dtype` holding f(i) (small integers: exact in every dtype), on the sweep's
// allocator (a device's too: written on the host, then copied there).
template <typename F>
Tensor Make(DType dtype, int64_t n, F f) {
  const bool device =
      sweep_allocator != nullptr && sweep_allocator->source().device != runtime::Device::kCpu;
  Tensor t = Tensor::Empty({n}, dtype, MemoryTag::kComm,
                           device ? &runtime::Allocator::Default() : sweep_allocator);
  for (int64_t i = 0; i < n; ++i) {
    const double v = f(i);
    switch (dtype) {
      case DType::kI32:
        t.data<int32_t>()[i] = static_cast<int32_t>(v);
        break;
      case DType::kI64:
        t.data<int64_t>()[i] = static_cast<int64_t>(v);
        break;
      default: {
        const float fv = static_cast<float>(v);
        runtime::ConvertBuffer(&fv, DType::kF32,
                               static_cast<char*>(t.raw_data()) + i * runtime::DTypeSize(dtype),
                               dtype, 1);
      }
    }
  }
  return device ? t.Clone(sweep_allocator) : t;
}

// `t` where the host can read it.
Tensor OnHost(const Tensor& t) {
  return t.device() == runtime::Device::kCpu ? t : t.Clone(&runtime::Allocator::Default());
}

double Get(const Tensor& t, int64_t i) {
  switch (t.dtype()) {
    case DType::kI32:
      return t.data<int32_t>()[i];
    case DType::kI64:
      return static_cast<double>(t.data<int64_t>()[i]);
    default:
      return runtime::LoadAsF32(t.raw_data(), t.dtype(), i);
  }
}

// Rounds an expected value the way the dtype stores it (avg can be fractional).
double Stored(DType dtype, double v) {
  if (!runtime::IsFloatingPoint(dtype)) return v;
  const Tensor t = OnHost(Make(dtype, 1, [v](int64_t) { return v; }));
  return Get(t, 0);
}

template <typename F>
void Expect(const Tensor& result, const std::string& what, F expected) {
  const Tensor out = OnHost(result);
  int64_t wrong = 0;
  for (int64_t i = 0; i < out.numel(); ++i) {
    const double e = expected(i);
    if (Get(out, i) != e && ++wrong <= 3) {
      ADD_FAILURE() << what << ": element " << i << " is " << Get(out, i) << ", expected " << e;
    }
  }
  EXPECT_EQ(wrong, 0) << what << ": " << wrong << " of " << out.numel() << " elements wrong";
}

void MustSucceed(const std::shared_ptr<Work>& w, const std::string& what) {
  const absl::Status s = w->Wait();
  ASSERT_TRUE(s.ok()) << what << ": " << s;
}

}  // namespace

void RunCollectiveSweep(Communicator& comm, const SweepOptions& options) {
  sweep_allocator = options.allocator;
  struct Reset {
    ~Reset() { sweep_allocator = nullptr; }
  } reset;
  const int n = comm.size(), r = comm.rank();
  const double tri = n * (n + 1) / 2.0;
  for (int64_t count : options.counts) {
    for (DType dt : kDTypes) {
      const std::string tag =
          absl::StrCat(runtime::DTypeName(dt), " count ", count, " rank ", r, "/", n);
      const bool all_ops = count <= options.max_count_all_ops;
      for (ReduceOp op : {ReduceOp::kSum, ReduceOp::kAvg, ReduceOp::kMax, ReduceOp::kMin}) {
        if (!all_ops && op != ReduceOp::kSum) continue;
        if (op == ReduceOp::kAvg && !runtime::IsFloatingPoint(dt)) continue;
        auto expected = [&](int64_t i) {
          const double base = static_cast<double>(i % 7 + 1);
          switch (op) {
            case ReduceOp::kSum:
              return base * tri;
            case ReduceOp::kAvg:
              return Stored(dt, static_cast<float>(base * tri) / static_cast<float>(n));
            case ReduceOp::kMax:
              return base * n;
            case ReduceOp::kMin:
              return base;
          }
          return 0.0;
        };
        const std::string what = absl::StrCat(ReduceOpName(op), " ", tag);
        // AllReduce, out of place and in place.
        Tensor in = Make(dt, count, [&](int64_t i) { return Value(r, i); });
        Tensor out = Make(dt, count, [](int64_t) { return kPoison; });
        MustSucceed(comm.AllReduce(in, out, op), "AllReduce " + what);
        Expect(out, "AllReduce " + what, expected);
        MustSucceed(comm.AllReduce(in, in, op), "AllReduce in-place " + what);
        Expect(in, "AllReduce in-place " + what, expected);
        // ReduceScatter: rank q's block of in holds Value(r, q·count + i).
        Tensor rs_in = Make(dt, count * n, [&](int64_t i) { return Value(r, i); });
        Tensor rs_out = Make(dt, count, [](int64_t) { return kPoison; });
        MustSucceed(comm.ReduceScatter(rs_in, rs_out, op), "ReduceScatter " + what);
        Expect(rs_out, "ReduceScatter " + what, [&](int64_t i) { return expected(r * count + i); });
      }
      if (!all_ops) continue;
      // AllGather: block q = Value(q, i).
      Tensor ag_in = Make(dt, count, [&](int64_t i) { return Value(r, i); });
      Tensor ag_out = Make(dt, count * n, [](int64_t) { return kPoison; });
      MustSucceed(comm.AllGather(ag_in, ag_out), "AllGather " + tag);
      Expect(ag_out, "AllGather " + tag, [&](int64_t i) {
        return Value(static_cast<int>(i / std::max<int64_t>(count, 1)),
                     i % std::max<int64_t>(count, 1));
      });
      // AllToAll: element i of rank r's input (block q = i / count) is 10·r + q + i % 3; block q of
      // rank r's output came from rank q.
      Tensor a2a_in = Make(dt, count * n, [&](int64_t i) {
        return 10.0 * r + static_cast<double>(i / std::max<int64_t>(count, 1)) + i % 3;
      });
      Tensor a2a_out = Make(dt, count * n, [](int64_t) { return kPoison; });
      MustSucceed(comm.AllToAll(a2a_in, a2a_out), "AllToAll " + tag);
      Expect(a2a_out, "AllToAll " + tag, [&](int64_t i) {
        const int64_t q = i / std::max<int64_t>(count, 1);
        return 10.0 * q + r + (r * count + i % std::max<int64_t>(count, 1)) % 3;
      });
      // Broadcast from every root.
      for (int root = 0; root < n; ++root) {
        Tensor buf =
            Make(dt, count, [&](int64_t i) { return r == root ? Value(root, i) : kPoison; });
        MustSucceed(comm.Broadcast(buf, root), absl::StrCat("Broadcast root ", root, " ", tag));
        Expect(buf, absl::StrCat("Broadcast root ", root, " ", tag),
               [&](int64_t i) { return Value(root, i); });
      }
    }
  }
  // AllToAllV: rank r sends (r + q) % 3 + count_scale elements to rank q, valued 100·r + q.
  for (int64_t scale : {0, 1, 7}) {
    std::vector<int64_t> send(n), recv(n);
    for (int q = 0; q < n; ++q) {
      send[q] = (r + q) % 3 + scale;
      recv[q] = (q + r) % 3 + scale;
    }
    const int64_t total_send = std::accumulate(send.begin(), send.end(), int64_t{0});
    const int64_t total_recv = std::accumulate(recv.begin(), recv.end(), int64_t{0});
    std::vector<double> in_values, expect_values;
    for (int q = 0; q < n; ++q) {
      for (int64_t k = 0; k < send[q]; ++k) in_values.push_back(100.0 * r + q);
      for (int64_t k = 0; k < recv[q]; ++k) expect_values.push_back(100.0 * q + r);
    }
    Tensor in = Make(DType::kI32, total_send, [&](int64_t i) { return in_values[i]; });
    Tensor out = Make(DType::kI32, total_recv, [](int64_t) { return kPoison; });
    const std::string what = absl::StrCat("AllToAllV scale ", scale, " rank ", r, "/", n);
    MustSucceed(comm.AllToAllV(in, send, out, recv), what);
    Expect(out, what, [&](int64_t i) { return expect_values[i]; });
  }
  // Send / Recv around a ring. With buffered sends (every host backend: a Send completes without
  // a matching Recv) every rank sends first; without (nccl) rank 0 sends first and the others
  // receive first, so the ring unwinds from rank 0.
  if (n > 1) {
    for (int64_t count : {int64_t{1}, int64_t{4099}}) {
      Tensor send = Make(DType::kF32, count, [&](int64_t i) { return Value(r, i); });
      Tensor recv = Make(DType::kF32, count, [](int64_t) { return kPoison; });
      const int next = (r + 1) % n, prev = (r + n - 1) % n;
      std::shared_ptr<Work> s, v;
      if (options.buffered_send || r == 0) {
        s = comm.Send(send, next, 5);
        v = comm.Recv(recv, prev, 5);
      } else {
        v = comm.Recv(recv, prev, 5);
        s = comm.Send(send, next, 5);
      }
      MustSucceed(s, "Send");
      MustSucceed(v, "Recv");
      Expect(recv, absl::StrCat("Recv from ", prev, " count ", count),
             [&](int64_t i) { return Value(prev, i); });
    }
  }
  MustSucceed(comm.Barrier(), "Barrier");
  // Split into even and odd ranks, reversed by key; an AllReduce of ranks inside each half.
  absl::StatusOr<std::unique_ptr<Communicator>> half = comm.Split(r % 2, -r);
  ASSERT_TRUE(half.ok()) << half.status();
  const int members = (n - r % 2 + 1) / 2;
  EXPECT_EQ((*half)->size(), members);
  Tensor t = Make(DType::kI64, 3, [&](int64_t) { return static_cast<double>(r); });
  MustSucceed((*half)->AllReduce(t, t, ReduceOp::kSum), "AllReduce after Split");
  double sum = 0;
  for (int q = r % 2; q < n; q += 2) sum += q;
  Expect(t, "AllReduce after Split", [&](int64_t) { return sum; });
  // New rank order follows the key (-old rank): the highest old rank is new rank 0.
  EXPECT_EQ((*half)->rank(), (members - 1) - r / 2);
}

}  // namespace loom::comm::testing
