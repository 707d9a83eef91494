#include "parallel/layers/moe.h"

#include <algorithm>
#include <cmath>
#include <numeric>

#include "absl/strings/str_cat.h"
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

Tensor F32(const Shape& shape) { return Tensor::Zeros(shape, DType::kF32, MemoryTag::kActivation); }
Tensor I64(const std::vector<int64_t>& v) {
  return Tensor::FromVector<int64_t>({static_cast<int64_t>(v.size())}, v, MemoryTag::kActivation);
}
std::vector<int64_t> Longs(const Tensor& t) {
  return {t.data<int64_t>(), t.data<int64_t>() + t.numel()};
}

// The expert tensors [E, a, b], split along the experts over "ep".
ShardSpec ExpertSpec(const MoeOptions& o) {
  if (o.ep == nullptr || o.ep->size() == 1) return ShardSpec::Replicated();
  return ShardSpec::Split(/*dim=*/0, "ep", o.ep->rank(), o.ep->size());
}

// A replicated parameter that sees only this ep rank's tokens.
ShardSpec ReplicatedSpec(const MoeOptions& o) {
  ShardSpec s = ShardSpec::Replicated();
  if (o.ep != nullptr && o.ep->size() > 1) s.grad_partial_over = {"ep"};
  return s;
}

// A zeroed [rows, width] f32 buffer whose row count depends on the routing: allocated with the
// rows rounded up to one of four sizes per power of two and viewed down, so the allocator's block
// cache (reuse by exact size) serves next step's buffers instead of fresh pages. `allocator`: where
// (nullptr: the default).
Tensor Rows(int64_t rows, int64_t width, bool zeroed = true,
            runtime::Allocator* allocator = nullptr, DType dtype = DType::kF32) {
  int64_t rounded = 1;
  while (rounded < rows) rounded *= 2;
  const int64_t step = std::max<int64_t>(1, rounded / 8);
  rounded = (rows + step - 1) / step * step;
  Tensor t = zeroed ? Tensor::Zeros({rounded, width}, dtype, MemoryTag::kActivation, allocator)
                    : Tensor::Empty({rounded, width}, dtype, MemoryTag::kActivation, allocator);
  return t.Slice(0, rows);
}

// Slot names of chunk c's tensors in the stash ("xr" -> "xr1").
std::string Slot(const char* name, int c) { return absl::StrCat(name, c); }

// Token range of chunk c of `chunks` over n tokens.
std::pair<int64_t, int64_t> ChunkRange(int64_t n, int c, int chunks) {
  return BalancedRange(n, c, chunks);
}

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
      bias_(Tensor::Zeros({options.num_experts}, DType::kF32, MemoryTag::kParam)),
      load_(options.num_experts, 0) {
  LOOM_CHECK(options.num_experts % ep_size() == 0 && options.top_k >= 1 &&
             options.top_k <= options.num_experts && options.expert_hidden > 0)
      << prefix << ": " << options.num_experts << " experts, top-" << options.top_k << ", hidden "
      << options.expert_hidden << " over " << ep_size() << " ep ranks";
  for (Parameter* p : {&router_, &gate_proj_, &up_proj_, &down_proj_}) p->AddUse();
  if (options.shared_experts > 0) {
    shared_ = std::make_unique<SwiGluMlp>(prefix + ".shared_experts", dim,
                                          options.shared_experts * options.expert_hidden);
    if (options.ep != nullptr && options.ep->size() > 1) {
      for (Parameter* p : shared_->Parameters()) p->AddGradPartialOver("ep");
    }
  }
}

kernels::TopKOptions MoeLayer::TopK() const {
  return {.k = options_.top_k,
          .groups = options_.groups,
          .top_groups = options_.top_groups,
          .normalize = options_.normalize_gates,
          .scale = options_.route_scale};
}

runtime::Allocator* MoeLayer::SendAllocator(DType dtype, DType wire) const {
  return ep_size() > 1 && dtype == wire ? options_.ep->shared_allocator() : nullptr;
}

int MoeLayer::Chunks(int64_t tokens) const {
  if (ep_size() == 1 || options_.capacity_factor > 0) return 1;  // capacity: whole micro-batch
  return static_cast<int>(std::max<int64_t>(1, std::min<int64_t>(options_.chunks, tokens)));
}

MoeLayer::Pending MoeLayer::StartExchange(const Tensor& in, const std::vector<int64_t>& send_rows,
                                          const std::vector<int64_t>& recv_rows, DType wire) {
  if (ep_size() == 1) return {.out = in};
  // The rows as they travel: f32 as given, bf16 rounded, or FP8 with per-block scales.
  Tensor packed = in;
  if (wire == DType::kBF16) {
    packed = Rows(in.dim(0), in.dim(1), /*zeroed=*/false, SendAllocator(wire, wire), wire);
    runtime::ConvertBuffer(in.raw_data(), DType::kF32, packed.raw_data(), wire, in.numel());
  } else if (wire == DType::kF8E4M3) {
    packed = Rows(in.dim(0), kernels::Fp8RowWidth(in.dim(1)), /*zeroed=*/false,
                  SendAllocator(wire, wire), wire);
    kernels::QuantizeRowsFp8(in, packed);
  }
  // Collectives carry 32- and 16-bit types: FP8 rows travel as i32 words (4-byte padded rows).
  const DType carrier = wire == DType::kF8E4M3 ? DType::kI32 : wire;
  if (carrier != wire) packed = packed.ViewAs(carrier, {packed.dim(0), packed.dim(1) / 4});
  const int64_t width = packed.dim(1);
  std::vector<int64_t> send, recv;
  for (int64_t r : send_rows) send.push_back(r * width);
  for (int64_t r : recv_rows) recv.push_back(r * width);
  Pending p{.out = Rows(std::accumulate(recv_rows.begin(), recv_rows.end(), int64_t{0}), width,
                        /*zeroed=*/false, nullptr, carrier),
            .in = packed,
            .wire = wire,
            .width = in.dim(1)};
  p.work = options_.ep->AllToAllV(packed, send, p.out, recv);
  if (!options_.overlap) Finish(p);
  return p;
}

Tensor MoeLayer::Finish(Pending& p) {
  if (p.work != nullptr) {
    const int64_t start = runtime::SteadyMicros();
    const absl::Status s = p.work->Wait();
    exchange_wait_ms_ += static_cast<double>(runtime::SteadyMicros() - start) / 1000.0;
    LOOM_CHECK(s.ok()) << router_.name() << ": expert-parallel exchange failed: " << s;
    p.work = nullptr;
    p.in = Tensor();
  }
  if (p.wire != DType::kF32) {  // widened once, on arrival
    Tensor wide = Rows(p.out.dim(0), p.width, /*zeroed=*/false);
    if (p.wire == DType::kF8E4M3) {
      kernels::DequantizeRowsFp8(
          p.out.ViewAs(DType::kF8E4M3, {p.out.dim(0), kernels::Fp8RowWidth(p.width)}), wide);
    } else {
      runtime::ConvertBuffer(p.out.raw_data(), p.wire, wide.raw_data(), DType::kF32, wide.numel());
    }
    p.out = wide;
    p.wire = DType::kF32;
  }
  return p.out;
}

MoeLayer::ChunkRouting MoeLayer::ReadRouting(const Stash& stash, int c) const {
  ChunkRouting r;
  r.send_rows = Longs(stash.Get(this, Slot("send_rows", c)));
  r.recv_rows = Longs(stash.Get(this, Slot("recv_rows", c)));
  r.segment_rows = Longs(stash.Get(this, Slot("segment_rows", c)));
  for (int64_t i = 0; i < options_.num_experts; ++i) {
    r.segment_weight.push_back(static_cast<int>(i % local_experts()));
  }
  return r;
}

std::vector<MoeLayer::ChunkRouting> MoeLayer::ExchangeCounts(
    const std::vector<kernels::RoutingPlan>& plans) {
  const int p = ep_size(), chunks = static_cast<int>(plans.size());
  const int64_t e = options_.num_experts, local = local_experts();
  std::vector<ChunkRouting> routing(chunks);
  for (int c = 0; c < chunks; ++c) {
    ChunkRouting& r = routing[c];
    r.send_rows.assign(p, 0);
    for (int64_t j = 0; j < e; ++j) r.send_rows[j / local] += plans[c].counts[j];
    for (int64_t i = 0; i < e; ++i) r.segment_weight.push_back(static_cast<int>(i % local));
    if (p == 1) {
      r.recv_rows = r.send_rows;
      r.segment_rows = plans[c].counts;
    }
  }
  if (p == 1) return routing;
  // One AllToAll for every chunk: to rank j, [chunk][j's local expert] counts.
  std::vector<int64_t> send;
  for (int j = 0; j < p; ++j) {
    for (int c = 0; c < chunks; ++c) {
      for (int64_t l = 0; l < local; ++l) send.push_back(plans[c].counts[j * local + l]);
    }
  }
  Tensor counts = I64(send), received = I64(send);
  const absl::Status s = options_.ep->AllToAll(counts, received)->Wait();
  LOOM_CHECK(s.ok()) << router_.name() << ": exchanging expert counts failed: " << s;
  const int64_t* got = received.data<int64_t>();  // [source][chunk][local expert]
  for (int c = 0; c < chunks; ++c) {
    ChunkRouting& r = routing[c];
    r.recv_rows.assign(p, 0);
    for (int src = 0; src < p; ++src) {
      for (int64_t l = 0; l < local; ++l) {
        const int64_t rows = got[(src * chunks + c) * local + l];
        r.segment_rows.push_back(rows);
        r.recv_rows[src] += rows;
      }
    }
  }
  return routing;
}

Tensor MoeLayer::Forward(Stash& stash, const Tensor& x_in) {
  const int64_t n = x_in.numel() / dim_, e = options_.num_experts, k = options_.top_k;
  const Tensor x = x_in.Reshape({n, dim_});
  stash.Put(this, "x", x);
  Tensor logits = F32({n, e}), scores = F32({n, e});
  kernels::Matmul(x, router_.value(), logits, {.trans_b = true});
  kernels::RouterScores(logits, options_.score, scores);
  Tensor experts = Tensor::Empty({n, k}, DType::kI32, MemoryTag::kActivation);
  Tensor gates = F32({n, k});
  kernels::TopKGate(scores, bias_, TopK(), experts, gates);
  const int64_t capacity =
      options_.capacity_factor > 0 ? kernels::ExpertCapacity(options_.capacity_factor, n, k, e) : 0;
  // Chunks of tokens, each dispatched, computed and combined in turn: one chunk's exchange
  // overlaps another's expert GEMMs.
  const int chunks = Chunks(n);
  std::vector<kernels::RoutingPlan> plans;
  std::vector<Pending> dispatched;
  std::vector<int64_t> load(e + 1, 0);  // + dropped
  for (int c = 0; c < chunks; ++c) {
    const auto [t0, t1] = ChunkRange(n, c, chunks);
    plans.push_back(kernels::PlanRouting(experts.Slice(t0, t1), e, capacity));
    for (int64_t j = 0; j < e; ++j) load[j] += plans[c].load[j];
    load[e] += plans[c].dropped;
  }
  const std::vector<ChunkRouting> routing = ExchangeCounts(plans);
  for (int c = 0; c < chunks; ++c) {
    const auto [t0, t1] = ChunkRange(n, c, chunks);
    Tensor xp = Rows(plans[c].rows(), dim_, /*zeroed=*/true,
                     SendAllocator(DType::kF32, options_.dispatch_dtype));
    kernels::MoePermute(x.Slice(t0, t1), plans[c].row_of, xp);
    dispatched.push_back(
        StartExchange(xp, routing[c].send_rows, routing[c].recv_rows, options_.dispatch_dtype));
  }
  // The shared experts need no exchange: they run while the dispatches are in flight.
  const Tensor shared_y = shared_ != nullptr ? shared_->Forward(stash, x) : Tensor();
  std::vector<Pending> combined;
  const int64_t h = options_.expert_hidden;
  for (int c = 0; c < chunks; ++c) {
    const ChunkRouting& r = routing[c];
    const Tensor xr = Finish(dispatched[c]);
    const int64_t rows = xr.dim(0);
    Tensor g = Rows(rows, h), u = Rows(rows, h), a = Rows(rows, h);
    Tensor yr =
        Rows(rows, dim_, /*zeroed=*/true, SendAllocator(DType::kF32, options_.combine_dtype));
    kernels::GroupedMatmul(xr, gate_proj_.value(), r.segment_rows, r.segment_weight, g,
                           {.trans_b = true});
    kernels::GroupedMatmul(xr, up_proj_.value(), r.segment_rows, r.segment_weight, u,
                           {.trans_b = true});
    kernels::SwiGLUForward(g, u, a);
    kernels::GroupedMatmul(a, down_proj_.value(), r.segment_rows, r.segment_weight, yr,
                           {.trans_b = true});
    combined.push_back(StartExchange(yr, r.recv_rows, r.send_rows, options_.combine_dtype));
    stash.Put(this, Slot("xr", c), xr);
    stash.Put(this, Slot("g", c), g);
    stash.Put(this, Slot("u", c), u);
    stash.Put(this, Slot("a", c), a);
    stash.PutExact(this, Slot("row_of", c), plans[c].row_of);
    stash.PutExact(this, Slot("send_rows", c), I64(r.send_rows));
    stash.PutExact(this, Slot("recv_rows", c), I64(r.recv_rows));
    stash.PutExact(this, Slot("segment_rows", c), I64(r.segment_rows));
  }
  Tensor y = F32({n, dim_});
  for (int c = 0; c < chunks; ++c) {
    const auto [t0, t1] = ChunkRange(n, c, chunks);
    const Tensor yp = Finish(combined[c]);
    const Tensor gates_c = gates.Slice(t0, t1);
    Tensor y_c = y.Slice(t0, t1);
    kernels::MoeCombine(yp, plans[c].row_of, &gates_c, y_c);
    stash.Put(this, Slot("yp", c), yp);
  }
  if (shared_ != nullptr) kernels::AddInto(y, shared_y);
  stash.PutExact(this, "scores", scores);
  stash.PutExact(this, "gates", gates);
  stash.PutExact(this, "experts", experts);
  stash.PutExact(this, "load", I64(load));
  if (options_.aux_loss_coef > 0) stash.AddAuxLoss(AuxLoss(stash, scores, experts));
  return y.Reshape(x_in.shape());
}

Tensor MoeLayer::BackwardInput(Stash& stash, const Tensor& dy_in) {
  const int64_t n = dy_in.numel() / dim_, k = options_.top_k;
  const Tensor dy = dy_in.Reshape({n, dim_});
  const Tensor gates = stash.Get(this, "gates");
  Tensor dgates = F32({n, k});
  const int chunks = Chunks(n);
  std::vector<ChunkRouting> routing;
  std::vector<Pending> dispatched;
  for (int c = 0; c < chunks; ++c) {
    const auto [t0, t1] = ChunkRange(n, c, chunks);
    routing.push_back(ReadRouting(stash, c));
    const Tensor yp = stash.Get(this, Slot("yp", c));
    Tensor dyp =
        Rows(yp.dim(0), dim_, /*zeroed=*/true, SendAllocator(DType::kF32, options_.combine_dtype));
    Tensor dgates_c = dgates.Slice(t0, t1);
    kernels::MoeCombineBackward(dy.Slice(t0, t1), yp, stash.Get(this, Slot("row_of", c)),
                                gates.Slice(t0, t1), dyp, dgates_c);
    dispatched.push_back(
        StartExchange(dyp, routing[c].send_rows, routing[c].recv_rows, options_.combine_dtype));
  }
  // While the output gradients travel: the shared experts' and the router's backward, which
  // need no exchange.
  Tensor dx = shared_ != nullptr ? shared_->BackwardInput(stash, dy) : F32({n, dim_});
  RouterBackward(stash, dgates, dx);
  std::vector<Pending> returned;
  const int64_t h = options_.expert_hidden;
  for (int c = 0; c < chunks; ++c) {
    const ChunkRouting& r = routing[c];
    const Tensor dyr = Finish(dispatched[c]);
    const Tensor xr = stash.Get(this, Slot("xr", c)), a = stash.Get(this, Slot("a", c));
    const int64_t rows = xr.dim(0);
    Tensor da = Rows(rows, h), dg = Rows(rows, h), du = Rows(rows, h);
    Tensor dxr =
        Rows(rows, dim_, /*zeroed=*/true, SendAllocator(DType::kF32, options_.combine_dtype));
    kernels::GroupedMatmulBackward(a, down_proj_.value(), dyr, r.segment_rows, r.segment_weight,
                                   &da, nullptr, {.trans_b = true});
    kernels::SwiGLUBackward(da, stash.Get(this, Slot("g", c)), stash.Get(this, Slot("u", c)), dg,
                            du);
    kernels::GroupedMatmulBackward(xr, gate_proj_.value(), dg, r.segment_rows, r.segment_weight,
                                   &dxr, nullptr, {.trans_b = true});
    kernels::GroupedMatmulBackward(xr, up_proj_.value(), du, r.segment_rows, r.segment_weight, &dxr,
                                   nullptr, {.trans_b = true});
    returned.push_back(StartExchange(dxr, r.recv_rows, r.send_rows, options_.combine_dtype));
    stash.Put(this, Slot("dyr", c), dyr);
    stash.Put(this, Slot("dg", c), dg);
    stash.Put(this, Slot("du", c), du);
  }
  for (int c = 0; c < chunks; ++c) {
    const auto [t0, t1] = ChunkRange(n, c, chunks);
    const Tensor dxp = Finish(returned[c]);
    Tensor dx_routed = F32({t1 - t0, dim_}), dx_c = dx.Slice(t0, t1);
    kernels::MoeCombine(dxp, stash.Get(this, Slot("row_of", c)), nullptr, dx_routed);
    kernels::AddInto(dx_c, dx_routed);
  }
  return dx.Reshape(dy_in.shape());
}

void MoeLayer::RouterBackward(Stash& stash, const Tensor& dgates, Tensor& dx) {
  const Tensor scores = stash.Get(this, "scores"), experts = stash.Get(this, "experts");
  Tensor dscores = F32(scores.shape()), dlogits = F32(scores.shape());
  kernels::TopKGateBackward(scores, experts, dgates, TopK(), dscores);
  if (options_.aux_loss_coef > 0) AuxLossBackward(stash, scores, experts, dscores);
  kernels::RouterScoresBackward(dscores, scores, options_.score, dlogits);
  kernels::Matmul(dlogits, router_.value(), dx, {.beta = 1.0f});
  stash.PutExact(this, "dlogits", dlogits);
}

void MoeLayer::BackwardWeight(Stash& stash) {
  const int64_t e = options_.num_experts;
  const Tensor x = stash.Get(this, "x");
  kernels::MatmulBackward(x, router_.value(), stash.Get(this, "dlogits"), nullptr, &router_.grad(),
                          {.trans_b = true});
  const int chunks = Chunks(x.dim(0));
  for (int c = 0; c < chunks; ++c) {
    const ChunkRouting r = ReadRouting(stash, c);
    const Tensor xr = stash.Get(this, Slot("xr", c));
    kernels::GroupedMatmulBackward(
        stash.Get(this, Slot("a", c)), down_proj_.value(), stash.Get(this, Slot("dyr", c)),
        r.segment_rows, r.segment_weight, nullptr, &down_proj_.grad(), {.trans_b = true});
    kernels::GroupedMatmulBackward(xr, gate_proj_.value(), stash.Get(this, Slot("dg", c)),
                                   r.segment_rows, r.segment_weight, nullptr, &gate_proj_.grad(),
                                   {.trans_b = true});
    kernels::GroupedMatmulBackward(xr, up_proj_.value(), stash.Get(this, Slot("du", c)),
                                   r.segment_rows, r.segment_weight, nullptr, &up_proj_.grad(),
                                   {.trans_b = true});
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

double MoeLayer::AuxLoss(const Stash& stash, const Tensor& scores, const Tensor& experts) const {
  const int64_t n = scores.dim(0), e = options_.num_experts, k = options_.top_k;
  const int64_t t = SequenceLength(stash, n), sequences = n / t;
  const float* s = scores.data<float>();
  const int32_t* ex = experts.data<int32_t>();
  double total = 0.0;
  for (int64_t b = 0; b < sequences; ++b) {
    std::vector<double> f(e, 0.0), prob(e, 0.0);
    for (int64_t i = b * t; i < (b + 1) * t; ++i) {
      for (int64_t c = 0; c < k; ++c) f[ex[i * k + c]] += static_cast<double>(e) / (k * t);
      const double sum = std::accumulate(s + i * e, s + (i + 1) * e, 0.0);
      for (int64_t j = 0; j < e; ++j) prob[j] += s[i * e + j] / sum / t;
    }
    for (int64_t j = 0; j < e; ++j) total += options_.aux_loss_coef * f[j] * prob[j];
  }
  return total / sequences;
}

void MoeLayer::AuxLossBackward(const Stash& stash, const Tensor& scores, const Tensor& experts,
                               Tensor& dscores) const {
  const int64_t n = scores.dim(0), e = options_.num_experts, k = options_.top_k;
  const int64_t t = SequenceLength(stash, n), sequences = n / t;
  const float* s = scores.data<float>();
  const int32_t* ex = experts.data<int32_t>();
  float* ds = dscores.data<float>();
  const double scale = stash.loss_grad_scale() * options_.aux_loss_coef / (sequences * t);
  for (int64_t b = 0; b < sequences; ++b) {
    std::vector<double> f(e, 0.0);
    for (int64_t i = b * t; i < (b + 1) * t; ++i) {
      for (int64_t c = 0; c < k; ++c) f[ex[i * k + c]] += static_cast<double>(e) / (k * t);
    }
    // ∂/∂p_j = scale · f_j for p = s / Σ s; through the normalisation:
    // ∂/∂s_j = (∂/∂p_j − Σ_i ∂/∂p_i · s_i / S) / S.
    for (int64_t i = b * t; i < (b + 1) * t; ++i) {
      const float* si = s + i * e;
      const double sum = std::accumulate(si, si + e, 0.0);
      double weighted = 0.0;
      for (int64_t j = 0; j < e; ++j) weighted += scale * f[j] * si[j] / sum;
      for (int64_t j = 0; j < e; ++j) {
        ds[i * e + j] += static_cast<float>((scale * f[j] - weighted) / sum);
      }
    }
  }
}

}  // namespace loom::parallel
