// Mixture-of-experts kernels: router scores, top-k gating (with node-limited routing), the token
// permutation that groups a batch's (token, choice) slots by expert, the gate-weighted combine
// back, and a grouped GEMM over segments of rows that each use one expert's weights.
//
//   RouterScores(logits, RouterScore::kSigmoid, scores);              // [N, E]
//   TopKGate(scores, bias, {.k = 4}, experts, gates);                 // i32 / f32 [N, K]
//   RoutingPlan plan = PlanRouting(experts, E, /*capacity=*/0);       // rows grouped by expert
//   MoePermute(x, plan.row_of, xp);                                   // xp: [plan.rows(), C]
//   GroupedMatmul(xp, w /*[E, H, C]*/, plan.counts, {}, h, {.trans_b = true});
//   MoeCombine(yp, plan.row_of, &gates, y);                           // y[t] = Σ_k g·yp[row]
//
// Conventions. N tokens, E experts, K choices per token. experts[t, k] is the k-th choice of
// token t (highest selection value first, ties to the lower index); row_of[t, k] is the row of
// the permuted layout that holds that (token, choice) slot, or -1 when capacity dropped it. The
// permuted layout lists expert 0's slots, then expert 1's, ..., each in token order, so a
// segment of consecutive rows goes to one expert and the same routing gives the same layout on
// any thread count. f32 activations, synchronous on the host; every kernel is deterministic. The
// routing (RouterScores, TopKGate and their backward, PlanRouting) runs on host tensors only;
// MoePermute, MoeCombine(Backward), the FP8 rows and GroupedMatmul also on a CUDA device (their
// twins; row_of then on the device too, unchecked there: its users check it on the host first,
// as the MoE layer does when it copies a plan up).
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "runtime/kernels/fp8_formula.h"  // kFp8Block: the dispatch's FP8 blocks
#include "runtime/kernels/matmul.h"
#include "runtime/tensor.h"

namespace loom::runtime::kernels {

enum class RouterScore {
  kSoftmax,  // s = softmax(logits) over the experts (Mixtral, DeepSeek-V2)
  kSigmoid,  // s = sigmoid(logits) per expert (DeepSeek-V3)
};

// scores[N, E] from router logits[N, E], and the logits' gradient (overwritten) from the scores'.
void RouterScores(const Tensor& logits, RouterScore kind, Tensor& scores);
void RouterScoresBackward(const Tensor& dscores, const Tensor& scores, RouterScore kind,
                          Tensor& dlogits);

struct TopKOptions {
  int64_t k = 1;
  // Node-limited routing (DeepSeek-V3): the experts form `groups` equal consecutive groups (a
  // host's experts); a token first picks the `top_groups` groups with the largest sum of their
  // best two selection values (the best one for groups of one expert) and then its k experts
  // inside them. groups = top_groups = 1: no limit. Requires k <= top_groups · E / groups.
  int64_t groups = 1;
  int64_t top_groups = 1;
  // gates = scale · s / Σ_k s (normalize) or scale · s, s the chosen experts' scores.
  bool normalize = true;
  float scale = 1.0f;
};

// Chooses each token's k experts by the selection value scores + bias (bias: f32 [E], or an
// undefined tensor for none; DeepSeek-V3's auxiliary-loss-free balancing bias steers the choice
// only) and computes their gates from the scores alone. experts: i32 [N, K]; gates: f32 [N, K].
void TopKGate(const Tensor& scores, const Tensor& bias, const TopKOptions& options, Tensor& experts,
              Tensor& gates);
// dscores[N, E] (overwritten: zero outside each token's chosen experts) from dgates[N, K]; the
// choice itself is piecewise constant and has no gradient.
void TopKGateBackward(const Tensor& scores, const Tensor& experts, const Tensor& dgates,
                      const TopKOptions& options, Tensor& dscores);

// Where each (token, choice) slot goes in the permuted layout.
struct RoutingPlan {
  Tensor row_of;                // i32 [N, K]: the slot's row, -1 if dropped
  std::vector<int64_t> counts;  // [E]: rows kept per expert (segment sizes of the layout)
  std::vector<int64_t> load;    // [E]: slots routed to each expert before any drop
  int64_t dropped = 0;          // slots dropped by capacity
  int64_t rows() const;         // Σ counts
};
// capacity > 0: each expert keeps at most `capacity` slots, the earliest tokens first (the
// rest are dropped: their gate contributes nothing); 0: dropless. An expert index of -1 marks a
// slot that is not routed here (row -1, neither load nor drop: a rank's view of the choices
// another rank sent it). Aborts on an index outside [-1, num_experts).
RoutingPlan PlanRouting(const Tensor& experts, int64_t num_experts, int64_t capacity);
// The capacity of each expert for `tokens` tokens with k choices among `num_experts` experts:
// ceil(factor · tokens · k / num_experts) (GShard / Switch).
int64_t ExpertCapacity(double factor, int64_t tokens, int64_t k, int64_t num_experts);

// out[row_of[t, k]] = x[t] for every kept slot. x: [N, C] (or [..., C]); out: [rows, C]. Rows
// move bitwise (any 4-byte words viewed as f32 come out unchanged: the MoE layer forwards packed
// FP8 rows this way). Its gradient is MoeCombine(dout, row_of, nullptr, dx).
void MoePermute(const Tensor& x, const Tensor& row_of, Tensor& out);
// out[t] = Σ_k gates[t, k] · y[row_of[t, k]] over kept slots (gates nullptr: weights 1),
// overwritten. y: [rows, C]; out: [N, C] (or [..., C]).
void MoeCombine(const Tensor& y, const Tensor& row_of, const Tensor* gates, Tensor& out);
// Gradients of MoeCombine with gates: dy[row_of[t, k]] = gates[t, k] · dout[t] and dgates[t, k]
// = dout[t] · y[row_of[t, k]] (dropped slots: 0), both overwritten.
void MoeCombineBackward(const Tensor& dout, const Tensor& y, const Tensor& row_of,
                        const Tensor& gates, Tensor& dy, Tensor& dgates);

// Grouped GEMM over consecutive row segments: segment s (rows[s] rows of a, starting after the
// previous segments) is multiplied by b[weight[s]] into the same rows of out:
//   out[seg s] = alpha · a[seg s] · op(b[weight[s]]) + beta · out[seg s]
// a: [R, K] with R = Σ rows; b: [G, K, N] ([G, N, K] with trans_b); out: [R, N]. weight empty:
// segment s uses b[s] (then rows.size() must be G). Segments of zero rows are skipped.
// options.trans_a must be false.
void GroupedMatmul(const Tensor& a, const Tensor& b, std::span<const int64_t> rows,
                   std::span<const int> weight, Tensor& out, const MatmulOptions& options = {});
// Gradients, accumulated: da += ∂/∂a (all rows), db[g] += Σ over g's segments (an expert with no
// rows keeps its gradient as it was). nullptr skips one.
void GroupedMatmulBackward(const Tensor& a, const Tensor& b, const Tensor& dout,
                           std::span<const int64_t> rows, std::span<const int> weight, Tensor* da,
                           Tensor* db, const MatmulOptions& options = {});

// FP8 rows for the dispatch (DeepSeek-V3): each row of x [R, C] f32 becomes C e4m3 values, one
// per element, scaled per block of 128 elements (the last block may be shorter) so the block's
// largest magnitude maps to 448 (e4m3's largest), followed by the blocks' f32 scales stored as
// raw bytes: packed is e4m3 [R, Fp8RowWidth(C)]. Dequantize restores x ≈ q · scale; the relative
// error is at most 2^-4 for values above the block's subnormal range (absolute at most
// scale · 2^-10 below it), and each block's largest magnitude comes back exactly. A block of
// zeros has scale 1. Rows are padded to a multiple of 4 bytes (so they can travel as i32 words,
// Tensor::ViewAs).
int64_t Fp8RowWidth(int64_t c);
void QuantizeRowsFp8(const Tensor& x, Tensor& packed);
void DequantizeRowsFp8(const Tensor& packed, Tensor& x);

}  // namespace loom::runtime::kernels
