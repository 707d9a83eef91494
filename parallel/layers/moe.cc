#include "parallel/layers/moe.h"

#include <algorithm>
#include <cmath>
#include <numeric>

#include "absl/strings/str_cat.h"
#include "parallel/lanes.h"
#include "runtime/base/check.h"
#include "runtime/base/clock.h"
#include "runtime/kernels/activation.h"
#include "runtime/kernels/elementwise.h"
#include "runtime/kernels/matmul.h"

namespace loom::parallel {

using runtime::DType;
using runtime::MemoryTag;
using runtime::Shape;
using runtime::Tensor;
namespace kernels = runtime::kernels;

namespace {

// Where things live. The routing (the router's choice, the plans, row counts, the gates and expert
// indices that travel with the rows) is host code on host tensors wherever the tokens are; the
// token rows, the experts' GEMMs and the combines are where the layer's activations are
// (Allocator::Current(): a device under the trainer's AllocatorScope), and the small index
// tensors the device kernels read are copied there (Beside).
runtime::Allocator* HostMemory() { return &runtime::Allocator::Default(); }
Tensor F32(const Shape& shape) { return Tensor::Zeros(shape, DType::kF32, MemoryTag::kActivation); }
Tensor HostF32(const Shape& shape) {
  return Tensor::Zeros(shape, DType::kF32, MemoryTag::kActivation, HostMemory());
}
Tensor I64(const std::vector<int64_t>& v) {
  return Tensor::FromVector<int64_t>({static_cast<int64_t>(v.size())}, v, MemoryTag::kActivation,
                                     HostMemory());
}
// `t` readable by host code: itself, or a copy of a device tensor.
Tensor OnHost(const Tensor& t) {
  return t.device() == runtime::Device::kCpu ? t : t.Clone(HostMemory());
}
// Host metadata `t` on the device of `like` (itself when that is the host).
Tensor Beside(const Tensor& t, const Tensor& like) {
  return t.device() == like.device() ? t : t.Clone(like.Beside());
}
// A host row_of (entries -1 or one of `rows` permuted rows) beside `like`, checked on the way: the
// device kernels index with it unchecked (on the host the kernels check it themselves).
Tensor RowsBeside(const Tensor& row_of, int64_t rows, const Tensor& like) {
  if (row_of.device() == like.device()) return row_of;
  const int32_t* r = row_of.data<int32_t>();
  for (int64_t i = 0; i < row_of.numel(); ++i) {
    LOOM_CHECK(r[i] >= -1 && r[i] < rows)
        << "MoE: row_of[" << i << "] = " << r[i] << " is outside the " << rows << " permuted rows";
  }
  return row_of.Clone(like.Beside());
}
std::vector<int64_t> Longs(const Tensor& t) {
  return {t.data<int64_t>(), t.data<int64_t>() + t.numel()};
}

// The expert tensors [E, a, b], split along the experts over the expert group.
ShardSpec ExpertSpec(const MoeOptions& o) {
  if (o.ep == nullptr || o.ep->size() == 1) return ShardSpec::Replicated();
  return ShardSpec::Split(/*dim=*/0, o.ep_axis, o.ep->rank(), o.ep->size());
}

// A replicated parameter that sees only this rank's tokens of the expert group's.
ShardSpec ReplicatedSpec(const MoeOptions& o) {
  ShardSpec s = ShardSpec::Replicated();
  if (o.ep != nullptr && o.ep->size() > 1) s.grad_partial_over = {o.ep_axis};
  return s;
}

// A [rows, width] buffer (not initialised: for outputs written whole) whose row count depends on
// the routing: allocated with the rows rounded up to one of eight sizes per power of two and
// viewed down, so the allocator's block cache (reuse by exact size) serves next step's buffers
// instead of fresh pages. `allocator`: where (nullptr: the default).
Tensor Rows(int64_t rows, int64_t width, runtime::Allocator* allocator = nullptr,
            DType dtype = DType::kF32) {
  int64_t rounded = 1;
  while (rounded < rows) rounded *= 2;
  const int64_t step = std::max<int64_t>(1, rounded / 8);
  rounded = (rows + step - 1) / step * step;
  return Tensor::Empty({rounded, width}, dtype, MemoryTag::kActivation, allocator).Slice(0, rows);
}

// As Rows, zeroed: for gradients the kernels accumulate into.
Tensor ZeroRows(int64_t rows, int64_t width) {
  Tensor t = Rows(rows, width);
  t.Fill(0.0f);
  return t;
}

// Slot names of chunk c's tensors in the stash ("xr" -> "xr1").
std::string Slot(const char* name, int c) { return absl::StrCat(name, c); }

}  // namespace

MoeLayer::MoeLayer(const std::string& prefix, int64_t dim, const MoeOptions& options)
    : dim_(dim),
      options_(options),
      router_(prefix + ".gate.weight", {options.num_experts, dim}, ReplicatedSpec(options),
              /*weight_decay=*/true),
      gate_proj_(prefix + ".experts.gate_proj.weight",
                 {options.num_experts, options.expert_hidden, dim}, ExpertSpec(options), true),
      up_proj_(prefix + ".experts.up_proj.weight",
               {options.num_experts, options.expert_hidden, dim}, ExpertSpec(options), true),
      down_proj_(prefix + ".experts.down_proj.weight",
                 {options.num_experts, dim, options.expert_hidden}, ExpertSpec(options), true),
      bias_name_(prefix + ".gate.e_score_correction_bias"),
      bias_(Tensor::Zeros({options.num_experts}, DType::kF32, MemoryTag::kParam, HostMemory())),
      load_(options.num_experts, 0) {
  LOOM_CHECK(options.num_experts % ep_size() == 0 && options.top_k >= 1 &&
             options.top_k <= options.num_experts && options.expert_hidden > 0)
      << prefix << ": " << options.num_experts << " experts, top-" << options.top_k << ", hidden "
      << options.expert_hidden << " over " << ep_size() << " ep ranks";
  LOOM_CHECK((options.ep_rail == nullptr) == (options.ep_host == nullptr) &&
             (options.ep_rail == nullptr ||
              (options.ep != nullptr &&
               options.ep_rail->size() * options.ep_host->size() == options.ep->size())))
      << prefix << ": the hierarchical dispatch needs rail and group communicators whose sizes "
      << "multiply to ep's";
  for (Parameter* p : {&router_, &gate_proj_, &up_proj_, &down_proj_}) p->AddUse();
  if (options.shared_experts > 0) {
    shared_ = std::make_unique<SwiGluMlp>(prefix + ".shared_experts", dim,
                                          options.shared_experts * options.expert_hidden);
    if (options.ep != nullptr && options.ep->size() > 1) {
      for (Parameter* p : shared_->Parameters()) p->AddGradPartialOver(options.ep_axis);
    }
  }
  if (splits_tokens() && !folds_tp()) {
    for (Parameter* p : Parameters()) p->AddGradPartialOver("tp");
  }
}

kernels::TopKOptions MoeLayer::TopK() const {
  return {.k = options_.top_k,
          .groups = options_.groups,
          .top_groups = options_.top_groups,
          .normalize = options_.normalize_gates,
          .scale = options_.route_scale};
}

comm::Communicator* MoeLayer::Outer() const {
  return options_.ep_rail != nullptr ? options_.ep_rail : options_.ep;
}

int64_t MoeLayer::OuterExperts() const {
  return options_.ep_rail != nullptr ? options_.num_experts / options_.ep_rail->size()
                                     : local_experts();
}

runtime::Allocator* MoeLayer::SendAllocator(comm::Communicator* group, DType dtype,
                                            DType wire) const {
  const bool host = runtime::Allocator::Current().device() == runtime::Device::kCpu;
  return host && group != nullptr && group->size() > 1 && dtype == wire ? group->shared_allocator()
                                                                        : nullptr;
}

comm::Communicator* MoeLayer::RowGroup() const {
  if (splits_tokens()) return options_.tp.group;
  return options_.sp != nullptr && options_.sp->size() > 1 ? options_.sp : nullptr;
}

Tensor MoeLayer::Share(const Tensor& t) const {
  const Tensor rows = t.Reshape({-1, dim_});
  const int size = options_.tp.group->size(), rank = options_.tp.group->rank();
  LOOM_CHECK_EQ(rows.dim(0) % size, 0)
      << router_.name() << ": the " << rows.dim(0)
      << " tokens of the micro-batch do not split over " << size << " tensor-parallel ranks";
  const int64_t n = rows.dim(0) / size;
  return rows.Slice(rank * n, (rank + 1) * n);
}

int MoeLayer::Chunks(int64_t tokens) const {
  if (ep_size() == 1 || options_.capacity_factor > 0) return 1;  // capacity: whole micro-batch
  return static_cast<int>(std::max<int64_t>(1, std::min<int64_t>(options_.chunks, tokens)));
}

MoeLayer::Pending MoeLayer::StartExchange(comm::Communicator* group, const Tensor& in,
                                          const std::vector<int64_t>& send_rows,
                                          const std::vector<int64_t>& recv_rows, DType wire) {
  // FP8 rows that arrived packed and are forwarded as they are (ForwardInGroup): widened by
  // Finish where they end, also when they go nowhere (a group of one rank).
  const bool prepacked = wire == DType::kF8E4M3 && in.dtype() == DType::kI32;
  if (group == nullptr || group->size() == 1) {
    return prepacked ? Pending{.out = in, .wire = wire, .width = dim_} : Pending{.out = in};
  }
  // The rows as they travel: f32 as given, bf16 rounded, or FP8 with per-block scales.
  Tensor packed = in;
  if (wire == DType::kBF16) {
    packed = Rows(in.dim(0), in.dim(1), SendAllocator(group, wire, wire), wire);
    kernels::Convert(in, packed);
  } else if (wire == DType::kF8E4M3 && !prepacked) {
    packed =
        Rows(in.dim(0), kernels::Fp8RowWidth(in.dim(1)), SendAllocator(group, wire, wire), wire);
    kernels::QuantizeRowsFp8(in, packed);
  }
  // Collectives carry 32- and 16-bit types: FP8 rows travel as i32 words (4-byte padded rows).
  const DType carrier = wire == DType::kF8E4M3 ? DType::kI32 : wire;
  if (carrier != wire && !prepacked) {
    packed = packed.ViewAs(carrier, {packed.dim(0), packed.dim(1) / 4});
  }
  const int64_t width = packed.dim(1);
  std::vector<int64_t> send, recv;
  for (int64_t r : send_rows) send.push_back(r * width);
  for (int64_t r : recv_rows) recv.push_back(r * width);
  Pending p{.out = Rows(std::accumulate(recv_rows.begin(), recv_rows.end(), int64_t{0}), width,
                        in.Beside(), carrier),
            .in = packed,
            .wire = wire,
            .width = prepacked ? dim_ : in.dim(1)};
  p.work = group->AllToAllV(packed, send, p.out, recv);
  if (!options_.overlap) Arrived(p);
  return p;
}

absl::Status MoeLayer::AwaitExchange(comm::Work& work) {
  // Dual micro-batch overlap (parallel/lanes.h): the other lane runs while this exchange travels;
  // without overlap the turn passes after it has arrived (the same turns, nothing in flight).
  if (options_.overlap) YieldLane();
  const int64_t start = runtime::SteadyMicros();
  const absl::Status s = work.Wait();
  exchange_wait_ms_ += static_cast<double>(runtime::SteadyMicros() - start) / 1000.0;
  if (!options_.overlap) YieldLane();
  return s;
}

Tensor MoeLayer::Arrived(Pending& p) {
  if (p.work != nullptr) {
    const absl::Status s = AwaitExchange(*p.work);
    LOOM_CHECK(s.ok()) << router_.name() << ": expert-parallel exchange failed: " << s;
    p.work = nullptr;
    p.in = Tensor();
  }
  return p.out;
}

Tensor MoeLayer::Finish(Pending& p) {
  Arrived(p);
  if (p.wire != DType::kF32) {  // widened once, on arrival
    Tensor wide = Rows(p.out.dim(0), p.width, p.out.Beside());
    if (p.wire == DType::kF8E4M3) {
      kernels::DequantizeRowsFp8(
          p.out.ViewAs(DType::kF8E4M3, {p.out.dim(0), kernels::Fp8RowWidth(p.width)}), wide);
    } else {
      kernels::Convert(p.out, wide);
    }
    p.out = wide;
    p.wire = DType::kF32;
  }
  return p.out;
}

std::vector<std::vector<int64_t>> MoeLayer::ExchangeCounts(
    comm::Communicator* group, const std::vector<std::vector<int64_t>>& send_rows) {
  const int p = group != nullptr ? group->size() : 1, chunks = static_cast<int>(send_rows.size());
  if (p == 1) return send_rows;
  // One AllToAll for every chunk: to rank j, the rows of each chunk it gets from this rank.
  std::vector<int64_t> send;
  for (int j = 0; j < p; ++j) {
    for (int c = 0; c < chunks; ++c) send.push_back(send_rows[c][j]);
  }
  Tensor counts = I64(send), received = I64(send);
  const absl::Status s = AwaitExchange(*group->AllToAll(counts, received));
  LOOM_CHECK(s.ok()) << router_.name() << ": exchanging row counts failed: " << s;
  const int64_t* got = received.data<int64_t>();  // [source][chunk]
  std::vector<std::vector<int64_t>> recv_rows(chunks, std::vector<int64_t>(p));
  for (int src = 0; src < p; ++src) {
    for (int c = 0; c < chunks; ++c) recv_rows[c][src] = got[src * chunks + c];
  }
  return recv_rows;
}

namespace {

// The sender's side of a chunk: each token once per ep rank that holds one of its kept experts
// (not once per expert), as DeepEP sends it. pair_row_of [n, P]: the token's row in the send
// layout for rank d (rank-major, token order), or -1; meta [rows, 2k]: for each row, per choice,
// the expert's index on that rank (-1: another rank's, or dropped) and the gate.
struct SendPlan {
  Tensor pair_row_of;
  std::vector<int64_t> send_rows;
  Tensor meta;
};

SendPlan PlanSend(const Tensor& experts, const Tensor& row_of, const Tensor& gates, int p,
                  int64_t local) {
  const int64_t n = experts.dim(0), k = experts.dim(1);
  const int32_t* ex = experts.data<int32_t>();
  const int32_t* kept = row_of.data<int32_t>();
  SendPlan plan{Tensor::Empty({n, p}, DType::kI32, MemoryTag::kActivation, HostMemory()),
                std::vector<int64_t>(p, 0), Tensor()};
  int32_t* pair = plan.pair_row_of.data<int32_t>();
  std::fill_n(pair, n * p, -1);
  for (int d = 0, row = 0; d < p; ++d) {
    for (int64_t t = 0; t < n; ++t) {
      for (int64_t j = 0; j < k; ++j) {
        if (kept[t * k + j] >= 0 && ex[t * k + j] / local == d) {
          pair[t * p + d] = row++;
          ++plan.send_rows[d];
          break;
        }
      }
    }
  }
  const int64_t rows = std::accumulate(plan.send_rows.begin(), plan.send_rows.end(), int64_t{0});
  plan.meta = Tensor::Empty({rows, 2 * k}, DType::kF32, MemoryTag::kActivation, HostMemory());
  float* meta = plan.meta.data<float>();
  const float* g = gates.data<float>();
  for (int64_t t = 0; t < n; ++t) {
    for (int d = 0; d < p; ++d) {
      const int32_t r = pair[t * p + d];
      if (r < 0) continue;
      for (int64_t j = 0; j < k; ++j) {
        const bool here = kept[t * k + j] >= 0 && ex[t * k + j] / local == d;
        meta[r * 2 * k + j] = here ? static_cast<float>(ex[t * k + j] % local) : -1.0f;
        meta[r * 2 * k + k + j] = here ? g[t * k + j] : 0.0f;
      }
    }
  }
  return plan;
}

// The receiver's view of the rows that arrived: per row and choice, the local expert (-1: not
// here) and the gate.
void UnpackMeta(const Tensor& meta, Tensor& experts, Tensor& gates) {
  const int64_t rows = meta.dim(0), k = meta.dim(1) / 2;
  experts = Tensor::Empty({rows, k}, DType::kI32, MemoryTag::kActivation, HostMemory());
  gates = Tensor::Empty({rows, k}, DType::kF32, MemoryTag::kActivation, HostMemory());
  const float* m = meta.data<float>();
  int32_t* ex = experts.data<int32_t>();
  float* g = gates.data<float>();
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t j = 0; j < k; ++j) {
      ex[r * k + j] = static_cast<int32_t>(m[r * 2 * k + j]);
      g[r * k + j] = m[r * 2 * k + k + j];
    }
  }
}

// dgates[t, j] of each kept choice from the gate gradients its expert's rank returned for the
// token's row (dgates_rows [rows, k]); 0 for dropped choices.
void GatherGateGrads(const Tensor& experts, const Tensor& row_of, const Tensor& pair_row_of,
                     const Tensor& dgates_rows, int64_t local, Tensor& dgates) {
  const int64_t n = experts.dim(0), k = experts.dim(1), p = pair_row_of.dim(1);
  const int32_t* ex = experts.data<int32_t>();
  const int32_t* pair = pair_row_of.data<int32_t>();
  const int32_t* kept = row_of.data<int32_t>();
  const float* from = dgates_rows.data<float>();
  float* to = dgates.data<float>();
  for (int64_t t = 0; t < n; ++t) {
    for (int64_t j = 0; j < k; ++j) {
      const int32_t r = pair[t * p + ex[t * k + j] / local];
      to[t * k + j] = kept[t * k + j] >= 0 ? from[r * k + j] : 0.0f;
    }
  }
}

}  // namespace

Tensor MoeLayer::Forward(Stash& stash, const Tensor& x) {
  if (!splits_tokens()) return ForwardShare(stash, x);
  return GatherTokens(options_.tp, ForwardShare(stash, Share(x))).Reshape(x.shape());
}

Tensor MoeLayer::BackwardInput(Stash& stash, const Tensor& dy) {
  // The output is replicated over tp, and so is its gradient: this rank's rows of it are the
  // whole gradient of the rows it computed.
  if (!splits_tokens()) return BackwardShare(stash, dy);
  return GatherTokens(options_.tp, BackwardShare(stash, Share(dy))).Reshape(dy.shape());
}

Tensor MoeLayer::ForwardShare(Stash& stash, const Tensor& x_in) {
  const int64_t n = x_in.numel() / dim_, e = options_.num_experts, k = options_.top_k;
  const Tensor x = x_in.Reshape({n, dim_});
  stash.Put(this, "x", x);
  Tensor logits = F32({n, e}), scores = HostF32({n, e});
  kernels::Matmul(x, router_.value(), logits, {.trans_b = true});
  kernels::RouterScores(OnHost(logits), options_.score, scores);  // the choice: host code
  Tensor experts = Tensor::Empty({n, k}, DType::kI32, MemoryTag::kActivation, HostMemory());
  Tensor gates = HostF32({n, k});
  kernels::TopKGate(scores, bias_, TopK(), experts, gates);
  const int64_t capacity =
      options_.capacity_factor > 0 ? kernels::ExpertCapacity(options_.capacity_factor, n, k, e) : 0;
  // Chunks of tokens, each dispatched, computed and combined in turn: one chunk's exchange
  // overlaps another's expert GEMMs.
  comm::Communicator* const outer = Outer();
  const int chunks = Chunks(n), p = outer != nullptr ? outer->size() : 1;
  std::vector<SendPlan> sends;
  std::vector<Tensor> pair_rows;        // sends' pair_row_of beside the tokens
  std::vector<int64_t> load(e + 1, 0);  // + dropped
  for (int c = 0; c < chunks; ++c) {
    const auto [t0, t1] = BalancedRange(n, c, chunks);
    const kernels::RoutingPlan plan = kernels::PlanRouting(experts.Slice(t0, t1), e, capacity);
    for (int64_t j = 0; j < e; ++j) load[j] += plan.load[j];
    load[e] += plan.dropped;
    sends.push_back(
        PlanSend(experts.Slice(t0, t1), plan.row_of, gates.Slice(t0, t1), p, OuterExperts()));
    pair_rows.push_back(RowsBeside(sends.back().pair_row_of, sends.back().meta.dim(0), x));
    stash.PutExact(this, Slot("row_of", c), plan.row_of);
  }
  std::vector<std::vector<int64_t>> send_rows;
  for (const SendPlan& s : sends) send_rows.push_back(s.send_rows);
  const std::vector<std::vector<int64_t>> recv_rows = ExchangeCounts(outer, send_rows);
  std::vector<Pending> metas, dispatched;
  for (int c = 0; c < chunks; ++c) {
    const auto [t0, t1] = BalancedRange(n, c, chunks);
    Tensor xs = Rows(sends[c].meta.dim(0), dim_,
                     SendAllocator(outer, DType::kF32, options_.dispatch_dtype));
    kernels::MoePermute(x.Slice(t0, t1), pair_rows[c], xs);
    metas.push_back(StartExchange(outer, sends[c].meta, send_rows[c], recv_rows[c], DType::kF32));
    dispatched.push_back(
        StartExchange(outer, xs, send_rows[c], recv_rows[c], options_.dispatch_dtype));
  }
  // The shared experts need no exchange: they run while the dispatches are in flight.
  const Tensor shared_y = shared_ != nullptr ? shared_->Forward(stash, x) : Tensor();
  std::vector<Pending> combined;
  for (int c = 0; c < chunks; ++c) {
    Tensor arrived_experts, arrived_gates;
    UnpackMeta(Finish(metas[c]), arrived_experts, arrived_gates);
    // FP8 rows that go on to this rank's group travel on packed: widened once, where they end.
    const bool forward_packed =
        options_.ep_rail != nullptr && options_.dispatch_dtype == DType::kF8E4M3;
    const Tensor arrived = forward_packed ? Arrived(dispatched[c]) : Finish(dispatched[c]);
    // Each arrived row's experts summed with their gates (here, or in this rank's group): one row
    // goes back per token.
    const Tensor back =
        options_.ep_rail != nullptr
            ? ForwardInGroup(stash, c, arrived, arrived_experts, arrived_gates)
            : ExpertsForward(stash, c, arrived, arrived_experts, arrived_gates,
                             SendAllocator(outer, DType::kF32, options_.combine_dtype));
    combined.push_back(
        StartExchange(outer, back, recv_rows[c], send_rows[c], options_.combine_dtype));
    stash.PutExact(this, Slot("pair_row_of", c), sends[c].pair_row_of);
    stash.PutExact(this, Slot("pair_rows", c), pair_rows[c]);
    stash.PutExact(this, Slot("send_rows", c), I64(send_rows[c]));
    stash.PutExact(this, Slot("recv_rows", c), I64(recv_rows[c]));
  }
  Tensor y = F32({n, dim_});
  for (int c = 0; c < chunks; ++c) {
    const auto [t0, t1] = BalancedRange(n, c, chunks);
    Tensor y_c = y.Slice(t0, t1);
    kernels::MoeCombine(Finish(combined[c]), pair_rows[c], nullptr, y_c);
  }
  if (shared_ != nullptr) kernels::AddInto(y, shared_y);
  stash.PutExact(this, "scores", scores);
  stash.PutExact(this, "gates", gates);
  stash.PutExact(this, "experts", experts);
  stash.PutExact(this, "load", I64(load));
  if (options_.aux_loss_coef > 0) stash.AddAuxLoss(AuxLoss(stash, scores, experts));
  return y.Reshape(x_in.shape());
}

Tensor MoeLayer::ExpertsForward(Stash& stash, int c, const Tensor& arrived,
                                const Tensor& local_experts, const Tensor& local_gates,
                                runtime::Allocator* out) {
  const kernels::RoutingPlan here = kernels::PlanRouting(local_experts, this->local_experts(), 0);
  const Tensor row_of = RowsBeside(here.row_of, here.rows(), arrived);
  const Tensor gates = Beside(local_gates, arrived);
  const int64_t rows = here.rows(), h = options_.expert_hidden;
  Tensor xr = Rows(rows, dim_), g = Rows(rows, h), u = Rows(rows, h), a = Rows(rows, h);
  Tensor yr = Rows(rows, dim_);
  kernels::MoePermute(arrived, row_of, xr);
  kernels::GroupedMatmul(xr, gate_proj_.value(), here.counts, {}, g, {.trans_b = true});
  kernels::GroupedMatmul(xr, up_proj_.value(), here.counts, {}, u, {.trans_b = true});
  kernels::SwiGLUForward(g, u, a);
  kernels::GroupedMatmul(a, down_proj_.value(), here.counts, {}, yr, {.trans_b = true});
  Tensor back = Rows(arrived.dim(0), dim_, out);
  kernels::MoeCombine(yr, row_of, &gates, back);
  stash.Put(this, Slot("xr", c), xr);
  stash.Put(this, Slot("g", c), g);
  stash.Put(this, Slot("u", c), u);
  stash.Put(this, Slot("a", c), a);
  stash.Put(this, Slot("yr", c), yr);
  stash.PutExact(this, Slot("here_row_of", c), row_of);
  stash.PutExact(this, Slot("here_gates", c), gates);
  stash.PutExact(this, Slot("here_counts", c), I64(here.counts));
  return back;
}

MoeLayer::RowGrads MoeLayer::ExpertsBackward(Stash& stash, int c, const Tensor& d_back,
                                             runtime::Allocator* out) {
  const int64_t k = options_.top_k, h = options_.expert_hidden;
  const Tensor here_row_of = stash.Get(this, Slot("here_row_of", c));
  const Tensor xr = stash.Get(this, Slot("xr", c)), a = stash.Get(this, Slot("a", c));
  const std::vector<int64_t> counts = Longs(stash.Get(this, Slot("here_counts", c)));
  const int64_t rows = xr.dim(0);
  Tensor dyr = Rows(rows, dim_);
  RowGrads grads{.dx = Rows(d_back.dim(0), dim_, out), .dgates = F32({d_back.dim(0), k})};
  kernels::MoeCombineBackward(d_back, stash.Get(this, Slot("yr", c)), here_row_of,
                              stash.Get(this, Slot("here_gates", c)), dyr, grads.dgates);
  Tensor da = ZeroRows(rows, h), dg = ZeroRows(rows, h), du = ZeroRows(rows, h);
  Tensor dxr = ZeroRows(rows, dim_);
  kernels::GroupedMatmulBackward(a, down_proj_.value(), dyr, counts, {}, &da, nullptr,
                                 {.trans_b = true});
  kernels::SwiGLUBackward(da, stash.Get(this, Slot("g", c)), stash.Get(this, Slot("u", c)), dg, du);
  kernels::GroupedMatmulBackward(xr, gate_proj_.value(), dg, counts, {}, &dxr, nullptr,
                                 {.trans_b = true});
  kernels::GroupedMatmulBackward(xr, up_proj_.value(), du, counts, {}, &dxr, nullptr,
                                 {.trans_b = true});
  kernels::MoeCombine(dxr, here_row_of, nullptr, grads.dx);
  stash.Put(this, Slot("dyr", c), dyr);
  stash.Put(this, Slot("dg", c), dg);
  stash.Put(this, Slot("du", c), du);
  return grads;
}

Tensor MoeLayer::ForwardInGroup(Stash& stash, int c, const Tensor& rows,
                                const Tensor& group_experts, const Tensor& gates) {
  comm::Communicator* const group = options_.ep_host;
  // A choice outside this group is -1 in group_experts, which PlanSend also reads as "not kept".
  const SendPlan plan =
      PlanSend(group_experts, group_experts, gates, group->size(), local_experts());
  const std::vector<int64_t> recv = ExchangeCounts(group, {plan.send_rows})[0];
  // `rows` are f32, or FP8 rows as they arrived (i32 words): MoePermute moves rows bitwise, so
  // those are forwarded as they are (viewed as f32 words) and widened only where they end.
  const DType sent = rows.dtype() == DType::kI32 ? options_.dispatch_dtype : DType::kF32;
  Tensor xs = Rows(plan.meta.dim(0), rows.dim(1),
                   SendAllocator(group, sent, options_.dispatch_dtype), rows.dtype());
  const Tensor pair_rows = RowsBeside(plan.pair_row_of, plan.meta.dim(0), rows);
  Tensor xs_words = xs.ViewAs(DType::kF32, xs.shape());
  kernels::MoePermute(rows.ViewAs(DType::kF32, rows.shape()), pair_rows, xs_words);
  Pending meta = StartExchange(group, plan.meta, plan.send_rows, recv, DType::kF32);
  Pending dispatched = StartExchange(group, xs, plan.send_rows, recv, options_.dispatch_dtype);
  Tensor local_experts, local_gates;
  UnpackMeta(Finish(meta), local_experts, local_gates);
  const Tensor arrived = Finish(dispatched);
  Tensor back = ExpertsForward(stash, c, arrived, local_experts, local_gates,
                               SendAllocator(group, DType::kF32, options_.combine_dtype));
  Pending combined = StartExchange(group, back, recv, plan.send_rows, options_.combine_dtype);
  Tensor out =
      Rows(rows.dim(0), dim_, SendAllocator(options_.ep_rail, DType::kF32, options_.combine_dtype));
  kernels::MoeCombine(Finish(combined), pair_rows, nullptr, out);
  stash.PutExact(this, Slot("group_experts", c), group_experts);
  stash.PutExact(this, Slot("group_pair_row_of", c), plan.pair_row_of);
  stash.PutExact(this, Slot("group_pair_rows", c), pair_rows);
  stash.PutExact(this, Slot("group_send_rows", c), I64(plan.send_rows));
  stash.PutExact(this, Slot("group_recv_rows", c), I64(recv));
  return out;
}

MoeLayer::RowGrads MoeLayer::BackwardInGroup(Stash& stash, int c, const Tensor& d_rows) {
  comm::Communicator* const group = options_.ep_host;
  const Tensor pair_row_of = stash.Get(this, Slot("group_pair_row_of", c));
  const Tensor pair_rows = stash.Get(this, Slot("group_pair_rows", c));
  const Tensor group_experts = stash.Get(this, Slot("group_experts", c));
  const std::vector<int64_t> send = Longs(stash.Get(this, Slot("group_send_rows", c)));
  const std::vector<int64_t> recv = Longs(stash.Get(this, Slot("group_recv_rows", c)));
  Tensor ds = Rows(std::accumulate(send.begin(), send.end(), int64_t{0}), dim_,
                   SendAllocator(group, DType::kF32, options_.combine_dtype));
  kernels::MoePermute(d_rows, pair_rows, ds);
  Pending dispatched = StartExchange(group, ds, send, recv, options_.combine_dtype);
  const RowGrads here = ExpertsBackward(stash, c, Finish(dispatched),
                                        SendAllocator(group, DType::kF32, options_.combine_dtype));
  Pending returned_gates = StartExchange(group, here.dgates, recv, send, DType::kF32);
  Pending returned = StartExchange(group, here.dx, recv, send, options_.combine_dtype);
  RowGrads grads{.dx = Rows(d_rows.dim(0), dim_,
                            SendAllocator(options_.ep_rail, DType::kF32, options_.combine_dtype)),
                 .dgates = HostF32({d_rows.dim(0), options_.top_k})};
  GatherGateGrads(group_experts, group_experts, pair_row_of, OnHost(Finish(returned_gates)),
                  local_experts(), grads.dgates);
  kernels::MoeCombine(Finish(returned), pair_rows, nullptr, grads.dx);
  return grads;
}

Tensor MoeLayer::BackwardShare(Stash& stash, const Tensor& dy_in) {
  const int64_t n = dy_in.numel() / dim_, k = options_.top_k;
  const Tensor dy = dy_in.Reshape({n, dim_});
  comm::Communicator* const outer = Outer();
  const int chunks = Chunks(n);
  std::vector<Pending> dispatched;
  for (int c = 0; c < chunks; ++c) {
    const auto [t0, t1] = BalancedRange(n, c, chunks);
    const std::vector<int64_t> send_rows = Longs(stash.Get(this, Slot("send_rows", c)));
    Tensor dys = Rows(std::accumulate(send_rows.begin(), send_rows.end(), int64_t{0}), dim_,
                      SendAllocator(outer, DType::kF32, options_.combine_dtype));
    kernels::MoePermute(dy.Slice(t0, t1), stash.Get(this, Slot("pair_rows", c)), dys);
    dispatched.push_back(StartExchange(outer, dys, send_rows,
                                       Longs(stash.Get(this, Slot("recv_rows", c))),
                                       options_.combine_dtype));
  }
  // The shared experts' backward needs no exchange: it runs while the gradients travel.
  Tensor dx = shared_ != nullptr ? shared_->BackwardInput(stash, dy) : F32({n, dim_});
  std::vector<Pending> returned, returned_gates;
  for (int c = 0; c < chunks; ++c) {
    const Tensor d_back = Finish(dispatched[c]);  // the gradient of each row this rank sent back
    const RowGrads here =
        options_.ep_rail != nullptr
            ? BackwardInGroup(stash, c, d_back)
            : ExpertsBackward(stash, c, d_back,
                              SendAllocator(outer, DType::kF32, options_.combine_dtype));
    const std::vector<int64_t> send_rows = Longs(stash.Get(this, Slot("send_rows", c)));
    const std::vector<int64_t> recv_rows = Longs(stash.Get(this, Slot("recv_rows", c)));
    returned_gates.push_back(StartExchange(outer, here.dgates, recv_rows, send_rows, DType::kF32));
    returned.push_back(StartExchange(outer, here.dx, recv_rows, send_rows, options_.combine_dtype));
  }
  const Tensor experts = stash.Get(this, "experts");
  Tensor dgates = HostF32({n, k});
  for (int c = 0; c < chunks; ++c) {
    const auto [t0, t1] = BalancedRange(n, c, chunks);
    Tensor dgates_c = dgates.Slice(t0, t1);
    GatherGateGrads(experts.Slice(t0, t1), stash.Get(this, Slot("row_of", c)),
                    stash.Get(this, Slot("pair_row_of", c)), OnHost(Finish(returned_gates[c])),
                    OuterExperts(), dgates_c);
    Tensor dx_routed = F32({t1 - t0, dim_}), dx_c = dx.Slice(t0, t1);
    kernels::MoeCombine(Finish(returned[c]), stash.Get(this, Slot("pair_rows", c)), nullptr,
                        dx_routed);
    kernels::AddInto(dx_c, dx_routed);
  }
  RouterBackward(stash, dgates, dx);
  return dx.Reshape(dy_in.shape());
}

void MoeLayer::RouterBackward(Stash& stash, const Tensor& dgates, Tensor& dx) {
  const Tensor scores = stash.Get(this, "scores"), experts = stash.Get(this, "experts");
  Tensor dscores = HostF32(scores.shape()), dlogits = HostF32(scores.shape());
  kernels::TopKGateBackward(scores, experts, dgates, TopK(), dscores);
  if (options_.aux_loss_coef > 0) AuxLossBackward(stash, scores, experts, dscores);
  kernels::RouterScoresBackward(dscores, scores, options_.score, dlogits);
  const Tensor dlogits_x = Beside(dlogits, dx);
  kernels::Matmul(dlogits_x, router_.value(), dx, {.beta = 1.0f});
  stash.PutExact(this, "dlogits", dlogits_x);
}

void MoeLayer::BackwardWeight(Stash& stash) {
  const int64_t e = options_.num_experts;
  const Tensor x = stash.Get(this, "x");
  kernels::MatmulBackward(x, router_.value(), stash.Get(this, "dlogits"), nullptr, &router_.grad(),
                          {.trans_b = true});
  const int chunks = Chunks(x.dim(0));
  for (int c = 0; c < chunks; ++c) {
    const std::vector<int64_t> counts = Longs(stash.Get(this, Slot("here_counts", c)));
    const Tensor xr = stash.Get(this, Slot("xr", c));
    kernels::GroupedMatmulBackward(stash.Get(this, Slot("a", c)), down_proj_.value(),
                                   stash.Get(this, Slot("dyr", c)), counts, {}, nullptr,
                                   &down_proj_.grad(), {.trans_b = true});
    kernels::GroupedMatmulBackward(xr, gate_proj_.value(), stash.Get(this, Slot("dg", c)), counts,
                                   {}, nullptr, &gate_proj_.grad(), {.trans_b = true});
    kernels::GroupedMatmulBackward(xr, up_proj_.value(), stash.Get(this, Slot("du", c)), counts, {},
                                   nullptr, &up_proj_.grad(), {.trans_b = true});
  }
  for (Parameter* p : {&router_, &gate_proj_, &up_proj_, &down_proj_}) p->ContributionDone();
  if (shared_ != nullptr) shared_->BackwardWeight(stash);
  const std::vector<int64_t> load = Longs(stash.Get(this, "load"));
  for (int64_t j = 0; j < e; ++j) load_[j] += load[j];
  dropped_ += load[e];
}

std::vector<Parameter*> MoeLayer::Parameters() {
  std::vector<Parameter*> params = {&router_, &gate_proj_, &up_proj_, &down_proj_};
  if (shared_ != nullptr) {
    for (Parameter* p : shared_->Parameters()) params.push_back(p);
  }
  return params;
}

absl::StatusOr<std::vector<int64_t>> MoeLayer::TakeLoad(
    const std::vector<comm::Communicator*>& groups) {
  std::vector<int64_t> counts = load_;
  counts.push_back(dropped_);
  Tensor total = I64(counts);
  for (comm::Communicator* group : groups) {
    if (group == nullptr || group->size() == 1) continue;
    absl::Status s = group->AllReduce(total, total, comm::ReduceOp::kSum)->Wait();
    if (!s.ok()) return s;
  }
  std::fill(load_.begin(), load_.end(), 0);
  dropped_ = 0;
  return Longs(total);
}

void MoeLayer::UpdateBias(const std::vector<int64_t>& load) {
  if (options_.bias_update_rate == 0.0f) return;
  const double mean = std::accumulate(load.begin(), load.end(), 0.0) / load.size();
  float* b = bias_.data<float>();
  for (size_t j = 0; j < load.size(); ++j) {
    const double diff = mean - static_cast<double>(load[j]);
    b[j] += options_.bias_update_rate * static_cast<float>((diff > 0) - (diff < 0));
  }
}

namespace {

// Tokens per sequence of the micro-batch (all n tokens when the stash does not say).
int64_t SequenceLength(const Stash& stash, int64_t n) {
  const int64_t t = stash.sequence_length();
  return t > 0 && n % t == 0 ? t : n;
}

}  // namespace

MoeLayer::AuxStats MoeLayer::AuxStatistics(const Stash& stash, const Tensor& scores,
                                           const Tensor& experts, bool probs) const {
  const int64_t n = scores.dim(0), e = options_.num_experts, k = options_.top_k;
  comm::Communicator* const sp = RowGroup();
  AuxStats st;
  // Sequence parallelism (or tp splitting the tokens): this rank holds rows [rank·n, (rank + 1)·n)
  // of the micro-batch's sequence-major rows, so a sequence may be split between ranks.
  const int64_t rows = sp != nullptr ? n * sp->size() : n;
  st.t = SequenceLength(stash, rows);
  st.sequences = rows / st.t;
  st.offset = sp != nullptr ? n * sp->rank() : 0;
  st.counts.assign(st.sequences * e, 0);
  if (probs) st.probs.assign(st.sequences * e, 0.0);
  const float* s = scores.data<float>();
  const int32_t* ex = experts.data<int32_t>();
  for (int64_t i = 0; i < n; ++i) {
    const int64_t b = (st.offset + i) / st.t;
    for (int64_t c = 0; c < k; ++c) ++st.counts[b * e + ex[i * k + c]];
    if (!probs) continue;
    const double sum = std::accumulate(s + i * e, s + (i + 1) * e, 0.0);
    for (int64_t j = 0; j < e; ++j) st.probs[b * e + j] += s[i * e + j] / sum / st.t;
  }
  if (sp == nullptr) return st;
  // The other ranks' rows: counts exactly (the gradient depends on them), the probabilities (the
  // reported loss only) in f32.
  Tensor counts =
      Tensor::FromVector<int64_t>({st.sequences * e}, st.counts, MemoryTag::kComm, HostMemory());
  absl::Status s1 = sp->AllReduce(counts, counts, comm::ReduceOp::kSum)->Wait();
  LOOM_CHECK(s1.ok()) << router_.name()
                      << ": summing the auxiliary loss's counts over tp failed: " << s1;
  st.counts.assign(counts.data<int64_t>(), counts.data<int64_t>() + counts.numel());
  if (probs) {
    std::vector<float> narrow(st.probs.begin(), st.probs.end());
    Tensor p =
        Tensor::FromVector<float>({st.sequences * e}, narrow, MemoryTag::kComm, HostMemory());
    absl::Status s2 = sp->AllReduce(p, p, comm::ReduceOp::kSum)->Wait();
    LOOM_CHECK(s2.ok()) << router_.name()
                        << ": summing the auxiliary loss's probabilities over tp failed: " << s2;
    st.probs.assign(p.data<float>(), p.data<float>() + p.numel());
  }
  return st;
}

double MoeLayer::AuxLoss(const Stash& stash, const Tensor& scores, const Tensor& experts) const {
  const int64_t e = options_.num_experts, k = options_.top_k;
  const AuxStats st = AuxStatistics(stash, scores, experts, /*probs=*/true);
  double total = 0.0;
  for (int64_t b = 0; b < st.sequences; ++b) {
    for (int64_t j = 0; j < e; ++j) {
      const double f = static_cast<double>(e) / (k * st.t) * st.counts[b * e + j];
      total += options_.aux_loss_coef * f * st.probs[b * e + j];
    }
  }
  return total / st.sequences;
}

void MoeLayer::AuxLossBackward(const Stash& stash, const Tensor& scores, const Tensor& experts,
                               Tensor& dscores) const {
  const int64_t n = scores.dim(0), e = options_.num_experts, k = options_.top_k;
  const AuxStats st = AuxStatistics(stash, scores, experts, /*probs=*/false);
  const float* s = scores.data<float>();
  float* ds = dscores.data<float>();
  const double scale = stash.loss_grad_scale() * options_.aux_loss_coef / (st.sequences * st.t);
  // ∂/∂p_j = scale · f_j for p = s / Σ s; through the normalisation:
  // ∂/∂s_j = (∂/∂p_j − Σ_i ∂/∂p_i · s_i / S) / S.
  std::vector<double> f(e);
  for (int64_t i = 0; i < n; ++i) {
    const int64_t b = (st.offset + i) / st.t;
    for (int64_t j = 0; j < e; ++j) {
      f[j] = static_cast<double>(e) / (k * st.t) * st.counts[b * e + j];
    }
    const float* si = s + i * e;
    const double sum = std::accumulate(si, si + e, 0.0);
    double weighted = 0.0;
    for (int64_t j = 0; j < e; ++j) weighted += scale * f[j] * si[j] / sum;
    for (int64_t j = 0; j < e; ++j) {
      ds[i * e + j] += static_cast<float>((scale * f[j] - weighted) / sum);
    }
  }
}

}  // namespace loom::parallel
