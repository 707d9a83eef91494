// Mixture of experts (DeepSeek-V3 style), a drop-in for a TransformerBlock's MLP slot.
//
//   MoeOptions o{.num_experts = 16, .top_k = 4, .expert_hidden = 128, .shared_experts = 1};
//   MoeLayer moe("h.1.mlp", /*dim=*/256, o);
//   Tensor y = moe.Forward(stash, x);     // x, y: [..., 256]
//
// y = Σ_k gate_k · expert_{e_k}(x) + shared(x) per token: a router (logits = x · gateᵀ, then
// softmax or sigmoid scores) picks each token's top-k routed experts by score + a balancing
// bias (the bias steers the choice only; gates come from the scores, normalised over the k),
// optionally within the best `top_groups` of `groups` expert groups (node-limited routing: a
// group is a host's experts); every expert and the shared experts are SwiGLU MLPs. Dropless by
// default; with a capacity factor each expert keeps its first ceil(factor · N · k / E) slots
// (token order) of the N tokens this rank routes (its micro-batch, or its tp share of it) and
// drops the rest.
//
// Expert parallelism: with an ep group of P ranks, rank r holds experts [r·E/P, (r+1)·E/P) (the
// expert tensors are split along dim 0 over "ep"); the router and the shared experts are
// replicated. Forward: route this rank's tokens; send each token once to every ep rank that
// holds one of its kept experts, with its local expert indices and gates (counts by AllToAll,
// rows and indices by AllToAllV); the receiver groups the slots by expert, runs its experts
// (grouped GEMM), sums each row's experts with their gates and sends one row back per (token,
// rank), which the sender adds up. The shared experts run while the dispatch is in flight.
// Backward is the mirror image (the receiver computes the gates' gradients and returns them with
// the input gradients). The ep ranks process different tokens, so the replicated parameters'
// gradients are partial over "ep" (MoeOptions::ep_axis: "ep_tp" when the expert group is the
// ep × tp ranks) (ShardSpec::grad_partial_over; data parallelism sums them there).
//
// Parameters (stable names; expert index = position along dim 0, global whatever ep is):
//   <prefix>.gate.weight                     [E, C]     router
//   <prefix>.experts.gate_proj.weight        [E, H, C]
//   <prefix>.experts.up_proj.weight          [E, H, C]
//   <prefix>.experts.down_proj.weight        [E, C, H]
//   <prefix>.shared_experts.{gate,up,down}_proj.weight   (hidden shared_experts · H)
// and one buffer, <prefix>.gate.e_score_correction_bias [E] (f32, not trained): the
// auxiliary-loss-free balancing bias, updated after each optimizer step from the step's expert
// loads, b_e += rate · sign(mean load − load_e).
//
// On a device (the layer's activations under a device AllocatorScope): the router's GEMM, the
// token rows, the experts and the combines run there; the routing (scores, top-k, plans, row
// counts, the balancing bias) is host code on a host copy of the logits, and the index tensors
// the device kernels read are copied up (docs/gpu.md).
//
// Optional sequence-level auxiliary loss (aux_loss_coef α > 0): α · Σ_e f_e · P_e per sequence,
// averaged over sequences, with f_e = E / (k·T) · (tokens of the sequence routed to e) and P_e
// = mean over its T tokens of s_e / Σ_j s_j. Its gradient enters the router in backward (scaled
// by Stash::loss_grad_scale); its value is reported through Stash::AddAuxLoss, not in the
// model's loss.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "comm/communicator.h"
#include "parallel/layer.h"
#include "parallel/layers/mlp.h"
#include "runtime/kernels/moe.h"

namespace loom::parallel {

struct MoeOptions {
  int64_t num_experts = 16;
  int64_t top_k = 4;
  int64_t expert_hidden = 0;   // H, each routed expert's hidden width
  int64_t shared_experts = 1;  // shared experts (one SwiGLU of shared_experts · H); 0: none
  runtime::kernels::RouterScore score = runtime::kernels::RouterScore::kSigmoid;
  bool normalize_gates = true;
  float route_scale = 1.0f;  // gates multiplied by this (DeepSeek's routed_scaling_factor)
  int64_t groups = 1;        // node-limited routing (runtime/kernels/moe.h, TopKOptions)
  int64_t top_groups = 1;
  double capacity_factor = 0.0;      // 0: dropless
  float bias_update_rate = 1e-3f;    // aux-loss-free balancing; 0: the bias stays 0
  float aux_loss_coef = 0.0f;        // sequence-level auxiliary loss α; 0: none
  comm::Communicator* ep = nullptr;  // expert parallelism (nullptr or one rank: none)
  // The mesh axis `ep` is in the parameters' specs: "ep", or kEpTpAxis when the expert group is
  // the ep × tp ranks (expert parallelism folded over tensor parallelism, Megatron-Core's "MoE
  // parallel folding": each of the ep·tp ranks holds E/(ep·tp) experts and routes its own share
  // of the tokens, `tp` or `sp` below). Folded, the router's and the shared experts' gradients
  // are partial over kEpTpAxis alone (it covers tp).
  std::string ep_axis = "ep";
  // Sequence parallelism: the tp group, whose ranks hold the micro-batch's other rows (each its
  // share of the sequence-major rows); the sequence-level auxiliary loss sums its statistics
  // there. nullptr or one rank: every row is here.
  comm::Communicator* sp = nullptr;
  // Tensor parallelism without sequence parallelism (tp.active() and not tp.sp()): the tp ranks
  // hold the same tokens, so each routes only its share, rows [r·n/tp, (r+1)·n/tp) of the
  // micro-batch's n (the rows sequence parallelism would give it), and the layer's output and input
  // gradient are all-gathered over tp (waits counted in tp.stats): the experts' work, routed and
  // shared, is split over the tp ranks instead of repeated on each. Every parameter's gradient is
  // then partial over "tp", the loads and the auxiliary loss's statistics are summed over it, and a
  // capacity factor applies to each rank's share. n must divide by tp.
  TensorParallelOptions tp = {};
  // Expert parallelism: the micro-batch's tokens go through the layer in this many chunks, each
  // dispatched, computed and combined in turn, so one chunk's all-to-all runs while another's
  // experts compute (overlap); overlap false waits for each exchange as it is issued (the same
  // arithmetic, bitwise: the baseline that measures what the overlap hides). One chunk without
  // ep or with a capacity factor (capacity is decided over the whole micro-batch).
  int chunks = 2;
  bool overlap = true;
  // Expert parallelism: the dtype rows travel in, widened to f32 on arrival. dispatch_dtype: the
  // forward dispatch (f32; bf16; or kF8E4M3: e4m3 with an f32 scale per 128 elements, DeepSeek-V3's
  // FP8 dispatch; runtime/kernels/moe.h QuantizeRowsFp8). combine_dtype: the forward combine and
  // both backward exchanges (f32 or bf16). The experts compute on what arrived (the rounded
  // values); gradients pass the rounding straight through.
  runtime::DType dispatch_dtype = runtime::DType::kF32;
  runtime::DType combine_dtype = runtime::DType::kF32;
  // Hierarchical dispatch (DeepEP's two hops; both nullptr: flat). The node-limited groups are
  // the hosts, each the experts of ep / groups consecutive ep ranks. `ep_rail`: the ep ranks with
  // this rank's index inside their group, one per group in group order; `ep_host`: the ranks of
  // this rank's group, in ep order. A token travels once to each group that holds one of its
  // experts (to the rail rank there), which forwards it inside the group to the ranks holding
  // them; each group's gate-weighted partial output comes back once. Backward mirrors it.
  comm::Communicator* ep_rail = nullptr;
  comm::Communicator* ep_host = nullptr;
};

class MoeLayer : public Layer {
 public:
  MoeLayer(const std::string& prefix, int64_t dim, const MoeOptions& options);

  runtime::Tensor Forward(Stash& stash, const runtime::Tensor& x) override;
  runtime::Tensor BackwardInput(Stash& stash, const runtime::Tensor& dy) override;
  void BackwardWeight(Stash& stash) override;
  std::vector<Parameter*> Parameters() override;

  const MoeOptions& options() const { return options_; }
  int ep_size() const { return options_.ep != nullptr ? options_.ep->size() : 1; }
  // Whether the tp ranks split this layer's tokens (MoeOptions::tp).
  bool splits_tokens() const { return options_.tp.active() && !options_.tp.sp(); }
  // Whether the expert group is the ep × tp ranks (MoeOptions::ep_axis).
  bool folds_tp() const { return options_.ep_axis == kEpTpAxis; }
  int64_t local_experts() const { return options_.num_experts / ep_size(); }
  // The balancing bias (f32 [E], the same on every rank) and its name, for checkpoints.
  runtime::Tensor& bias() { return bias_; }
  const std::string& bias_name() const { return bias_name_; }
  // Whether this rank holds the layer's parameters (a pipeline drops other stages' values): read
  // where parameters are (a checkpoint's gather).
  bool held() const { return router_.value().defined(); }
  // Slots routed to each expert (before capacity drops) by this rank's micro-batches whose
  // backward finished since the last TakeLoad, and the slots dropped.
  const std::vector<int64_t>& load() const { return load_; }
  int64_t dropped() const { return dropped_; }
  // Returns the step's load summed over `groups` (collective over each: the ranks that routed
  // other tokens through this layer, dp and ep, and tp under sequence parallelism or when the tp
  // ranks split the tokens), with the dropped slots appended as entry E, and restarts the count.
  absl::StatusOr<std::vector<int64_t>> TakeLoad(const std::vector<comm::Communicator*>& groups);
  // b_e += rate · sign(mean(load) − load_e) (load: TakeLoad's, the same on every rank).
  void UpdateBias(const std::vector<int64_t>& load);
  // Milliseconds spent waiting for the expert-parallel exchanges (row counts, dispatch and
  // combine, forward and backward) since the last reset: what the overlap did not hide.
  double exchange_wait_ms() const { return exchange_wait_ms_; }
  void ResetExchangeWait() { exchange_wait_ms_ = 0.0; }

 private:
  // An exchange in flight: its output and its Work (nullptr once waited for, or without ep).
  struct Pending {
    runtime::Tensor out;  // in the wire dtype until Finish widens it
    std::shared_ptr<comm::Work> work = nullptr;
    runtime::Tensor in = {};  // the send buffer, alive until the exchange completes
    runtime::DType wire = runtime::DType::kF32;
    int64_t width = 0;  // f32 elements per row
  };
  // Forward and input gradient of the rows this rank routes (all of x, or its tp share).
  runtime::Tensor ForwardShare(Stash& stash, const runtime::Tensor& x);
  runtime::Tensor BackwardShare(Stash& stash, const runtime::Tensor& dy);
  // This tp rank's share of the [n, dim] rows of t (MoeOptions::tp).
  runtime::Tensor Share(const runtime::Tensor& t) const;
  // The group whose ranks hold the micro-batch's other rows (sequence parallelism's, or tp when it
  // splits the tokens); nullptr when every row is here.
  comm::Communicator* RowGroup() const;
  int Chunks(int64_t tokens) const;
  // The group a token's rows go to first (ep, or the rail group with the hierarchical dispatch)
  // and the experts each of its ranks stands for (its own, or its group's).
  comm::Communicator* Outer() const;
  int64_t OuterExperts() const;
  // Where the exchanges' send buffers live: `group`'s shared arena when it has one (the shm
  // backend then copies each row once, straight from this rank's buffer into the receiver's),
  // else the default allocator. They live only while their exchange is in flight.
  // A buffer of `dtype` goes on the wire itself when it is the `wire` dtype (else a narrowed copy
  // does, which then comes from the arena).
  runtime::Allocator* SendAllocator(comm::Communicator* group, runtime::DType dtype,
                                    runtime::DType wire) const;
  // Sends `in` (rows per destination rank: send_rows) over `group`; Finish waits and returns what
  // arrived (recv_rows per source), widened to f32. Without a group (or one rank), `in` itself
  // (widened by Finish too when it is packed FP8). `in` is f32 rows, or with an FP8 wire also
  // FP8 rows already packed (i32 words), which travel as they are.
  Pending StartExchange(comm::Communicator* group, const runtime::Tensor& in,
                        const std::vector<int64_t>& send_rows,
                        const std::vector<int64_t>& recv_rows, runtime::DType wire);
  runtime::Tensor Finish(Pending& pending);
  // Waits for the exchange (if in flight) and returns what arrived as it travelled, not widened.
  runtime::Tensor Arrived(Pending& pending);
  // Waits for an exchange this rank issued (the row counts or Finish's), timed into
  // exchange_wait_ms, taking turns with the other lanes around the wait (parallel/lanes.h).
  absl::Status AwaitExchange(comm::Work& work);
  // The rows each chunk receives from each rank of `group`, given what it sends them
  // (send_rows[chunk][rank]): one AllToAll of the counts for every chunk.
  std::vector<std::vector<int64_t>> ExchangeCounts(
      comm::Communicator* group, const std::vector<std::vector<int64_t>>& send_rows);
  // This rank's experts on the rows that arrived for chunk c (per row and choice, the local
  // expert or -1, and the gate): one gate-weighted row per arrived row, from `out` (the
  // allocator of the exchange it goes back through). Stashes what backward needs.
  runtime::Tensor ExpertsForward(Stash& stash, int c, const runtime::Tensor& arrived,
                                 const runtime::Tensor& local_experts,
                                 const runtime::Tensor& local_gates, runtime::Allocator* out);
  // Its backward from the gradient of those rows: the arrived rows' input gradients and their
  // gates' gradients [rows, k].
  struct RowGrads {
    runtime::Tensor dx, dgates;
  };
  RowGrads ExpertsBackward(Stash& stash, int c, const runtime::Tensor& d_back,
                           runtime::Allocator* out);
  // Hierarchical dispatch, at the rail rank of a group: the rows that arrived for chunk c (with
  // their choices as the group's expert indices, -1 elsewhere) forwarded inside the group, and
  // the group's partial output per row; and its backward. FP8 rows arrive and are forwarded
  // packed (i32 words), widened only by the ranks whose experts take them.
  runtime::Tensor ForwardInGroup(Stash& stash, int c, const runtime::Tensor& rows,
                                 const runtime::Tensor& group_experts,
                                 const runtime::Tensor& gates);
  RowGrads BackwardInGroup(Stash& stash, int c, const runtime::Tensor& d_rows);
  // The router's backward from the gates' gradient (and the auxiliary loss): dx += dlogits · gate;
  // dlogits stashed for BackwardWeight.
  void RouterBackward(Stash& stash, const runtime::Tensor& dgates, runtime::Tensor& dx);
  // Adds the auxiliary loss's gradient (with respect to the scores) into dscores.
  void AuxLossBackward(const Stash& stash, const runtime::Tensor& scores,
                       const runtime::Tensor& experts, runtime::Tensor& dscores) const;
  double AuxLoss(const Stash& stash, const runtime::Tensor& scores,
                 const runtime::Tensor& experts) const;
  // The auxiliary loss's per-sequence statistics over the whole micro-batch: counts[b·E + e] (slots
  // of sequence b routed to e) and, with `probs`, Σ over its tokens of s_e / Σ s / t. Under
  // sequence parallelism this rank's rows are rows [offset, offset + n) of the micro-batch and
  // the sums are completed over options_.sp (collective).
  struct AuxStats {
    int64_t sequences = 0, t = 0, offset = 0;
    std::vector<int64_t> counts;
    std::vector<double> probs;
  };
  AuxStats AuxStatistics(const Stash& stash, const runtime::Tensor& scores,
                         const runtime::Tensor& experts, bool probs) const;
  runtime::kernels::TopKOptions TopK() const;

  int64_t dim_;
  MoeOptions options_;
  Parameter router_;
  Parameter gate_proj_, up_proj_, down_proj_;  // this rank's experts
  std::unique_ptr<SwiGluMlp> shared_;
  std::string bias_name_;
  runtime::Tensor bias_;
  std::vector<int64_t> load_;
  int64_t dropped_ = 0;
  double exchange_wait_ms_ = 0.0;
};

}  // namespace loom::parallel
