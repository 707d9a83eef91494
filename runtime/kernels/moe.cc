#include "runtime/kernels/moe.h"

#include <cmath>
#include <numeric>

#include "absl/strings/str_cat.h"
#include "runtime/kernels/arg_check.h"
#include "runtime/kernels/cpu/cpu_kernels.h"
#include "runtime/kernels/cuda_twins.h"

namespace loom::runtime::kernels {
namespace {

// [N, E] f32 router tensors of one shape.
void CheckRouterPair(const ArgCheck& check, const Tensor& a, const Tensor& b) {
  check.ExpectDType(a, DType::kF32);
  check.ExpectRank(a, 2);
  check.ExpectDType(b, DType::kF32);
  check.ExpectShape(b, a.shape());
  check.RequireCpu();
}

// experts i32 and a second [N, K] tensor of `dtype` for scores [N, E], valid choices.
void CheckChoices(const ArgCheck& check, const Tensor& scores, const TopKOptions& o,
                  const Tensor& experts, const Tensor& other, DType dtype) {
  check.ExpectDType(scores, DType::kF32);
  check.ExpectRank(scores, 2);
  const int64_t e = scores.dim(1);
  check.Expect(o.k >= 1 && o.k <= e, absl::StrCat("k = ", o.k, " must be in [1, ", e, "]"));
  check.Expect(o.groups >= 1 && e % o.groups == 0 && o.top_groups >= 1 &&
                   o.top_groups <= o.groups && o.k <= o.top_groups * (e / o.groups),
               absl::StrCat("groups ", o.groups, " must divide the ", e, " experts and top_groups ",
                            o.top_groups, " of them must hold k = ", o.k, " experts"));
  check.ExpectDType(experts, DType::kI32);
  check.ExpectShape(experts, {scores.dim(0), o.k});
  check.ExpectDType(other, dtype);
  check.ExpectShape(other, {scores.dim(0), o.k});
  check.RequireCpu();
}

// row_of i32 [N, K] for the N token rows of `tokens` ([..., C]), rows of `permuted` in range
// (read where row_of is on the host: on a device it comes from a host plan that was checked).
// Returns whether the arguments are on a CUDA device.
bool CheckRows(const ArgCheck& check, const Tensor& tokens, const Tensor& row_of,
               const Tensor& permuted) {
  check.ExpectDType(tokens, DType::kF32);
  check.ExpectDType(permuted, DType::kF32);
  check.ExpectRank(permuted, 2);
  check.ExpectDType(row_of, DType::kI32);
  check.ExpectRank(row_of, 2);
  const int64_t c = tokens.dim(-1);
  check.Expect(tokens.numel() / c == row_of.dim(0) && permuted.dim(1) == c,
               "row_of must have one row per token and the permuted rows the tokens' width");
  if (check.OnCuda()) return true;
  const int32_t* r = row_of.data<int32_t>();
  for (int64_t i = 0; i < row_of.numel(); ++i) {
    check.Expect(r[i] >= -1 && r[i] < permuted.dim(0),
                 absl::StrCat("row_of[", i, "] = ", r[i], " is outside the ", permuted.dim(0),
                              " permuted rows"));
  }
  return false;
}

}  // namespace

void RouterScores(const Tensor& logits, RouterScore kind, Tensor& scores) {
  CheckRouterPair(ArgCheck("RouterScores", {{"logits", &logits}, {"scores", &scores}}), logits,
                  scores);
  cpu::RouterScores(logits, kind, scores);
}

void RouterScoresBackward(const Tensor& dscores, const Tensor& scores, RouterScore kind,
                          Tensor& dlogits) {
  const ArgCheck check("RouterScoresBackward",
                       {{"dscores", &dscores}, {"scores", &scores}, {"dlogits", &dlogits}});
  CheckRouterPair(check, scores, dscores);
  CheckRouterPair(check, scores, dlogits);
  cpu::RouterScoresBackward(dscores, scores, kind, dlogits);
}

void TopKGate(const Tensor& scores, const Tensor& bias, const TopKOptions& options, Tensor& experts,
              Tensor& gates) {
  const ArgCheck check(
      "TopKGate", {{"scores", &scores}, {"bias", &bias}, {"experts", &experts}, {"gates", &gates}});
  CheckChoices(check, scores, options, experts, gates, DType::kF32);
  if (bias.defined()) {
    check.ExpectDType(bias, DType::kF32);
    check.ExpectShape(bias, {scores.dim(1)});
  }
  cpu::TopKGate(scores, bias.defined() ? bias.data<float>() : nullptr, options, experts, gates);
}

void TopKGateBackward(const Tensor& scores, const Tensor& experts, const Tensor& dgates,
                      const TopKOptions& options, Tensor& dscores) {
  const ArgCheck check(
      "TopKGateBackward",
      {{"scores", &scores}, {"experts", &experts}, {"dgates", &dgates}, {"dscores", &dscores}});
  CheckChoices(check, scores, options, experts, dgates, DType::kF32);
  check.ExpectDType(dscores, DType::kF32);
  check.ExpectShape(dscores, scores.shape());
  cpu::TopKGateBackward(scores, experts, dgates, options, dscores);
}

int64_t RoutingPlan::rows() const { return std::accumulate(counts.begin(), counts.end(), 0L); }

RoutingPlan PlanRouting(const Tensor& experts, int64_t num_experts, int64_t capacity) {
  const ArgCheck check("PlanRouting", {{"experts", &experts}});
  check.ExpectDType(experts, DType::kI32);
  check.ExpectRank(experts, 2);
  check.Expect(capacity >= 0, "capacity must be >= 0 (0: dropless)");
  const int32_t* e = experts.data<int32_t>();
  for (int64_t i = 0; i < experts.numel(); ++i) {
    check.Expect(e[i] >= -1 && e[i] < num_experts,
                 absl::StrCat("experts[", i, "] = ", e[i], " is outside [-1, ", num_experts, ")"));
  }
  check.RequireCpu();
  RoutingPlan plan;  // host metadata, wherever the rows it permutes are
  plan.row_of =
      Tensor::Empty(experts.shape(), DType::kI32, MemoryTag::kActivation, &Allocator::Default());
  cpu::PlanRouting(experts, num_experts, capacity, plan.row_of, plan.counts, plan.load,
                   plan.dropped);
  return plan;
}

int64_t ExpertCapacity(double factor, int64_t tokens, int64_t k, int64_t num_experts) {
  return static_cast<int64_t>(
      std::ceil(factor * static_cast<double>(tokens * k) / static_cast<double>(num_experts)));
}

void MoePermute(const Tensor& x, const Tensor& row_of, Tensor& out) {
  const ArgCheck check("MoePermute", {{"x", &x}, {"row_of", &row_of}, {"out", &out}});
  if (CheckRows(check, x, row_of, out)) return check.Twin(CudaTwins().moe_permute)(x, row_of, out);
  cpu::MoePermute(x, row_of, out);
}

void MoeCombine(const Tensor& y, const Tensor& row_of, const Tensor* gates, Tensor& out) {
  const Tensor none;
  const ArgCheck check(
      "MoeCombine",
      {{"y", &y}, {"row_of", &row_of}, {"gates", gates != nullptr ? gates : &none}, {"out", &out}});
  if (gates != nullptr) {
    check.ExpectDType(*gates, DType::kF32);
    check.ExpectShape(*gates, row_of.shape());
  }
  if (CheckRows(check, out, row_of, y)) {
    return check.Twin(CudaTwins().moe_combine)(y, row_of, gates, out);
  }
  cpu::MoeCombine(y, row_of, gates != nullptr ? gates->data<float>() : nullptr, out);
}

void MoeCombineBackward(const Tensor& dout, const Tensor& y, const Tensor& row_of,
                        const Tensor& gates, Tensor& dy, Tensor& dgates) {
  const ArgCheck check("MoeCombineBackward", {{"dout", &dout},
                                              {"y", &y},
                                              {"row_of", &row_of},
                                              {"gates", &gates},
                                              {"dy", &dy},
                                              {"dgates", &dgates}});
  check.ExpectShape(dy, y.shape());
  check.ExpectDType(dy, DType::kF32);
  check.ExpectDType(gates, DType::kF32);
  check.ExpectShape(gates, row_of.shape());
  check.ExpectDType(dgates, DType::kF32);
  check.ExpectShape(dgates, row_of.shape());
  if (CheckRows(check, dout, row_of, y)) {
    return check.Twin(CudaTwins().moe_combine_backward)(dout, y, row_of, gates, dy, dgates);
  }
  cpu::MoeCombineBackward(dout, y, row_of, gates, dy, dgates);
}

int64_t Fp8RowWidth(int64_t c) { return (c + 3) / 4 * 4 + 4 * ((c + kFp8Block - 1) / kFp8Block); }

namespace {

// Returns whether the arguments are on a CUDA device.
bool CheckFp8Rows(const ArgCheck& check, const Tensor& x, const Tensor& packed) {
  check.ExpectDType(x, DType::kF32);
  check.ExpectRank(x, 2);
  check.ExpectDType(packed, DType::kF8E4M3);
  check.ExpectShape(packed, {x.dim(0), Fp8RowWidth(x.dim(1))});
  return check.OnCuda();
}

}  // namespace

void QuantizeRowsFp8(const Tensor& x, Tensor& packed) {
  const ArgCheck check("QuantizeRowsFp8", {{"x", &x}, {"packed", &packed}});
  if (CheckFp8Rows(check, x, packed)) return check.Twin(CudaTwins().quantize_rows_fp8)(x, packed);
  cpu::QuantizeRowsFp8(x, packed);
}

void DequantizeRowsFp8(const Tensor& packed, Tensor& x) {
  const ArgCheck check("DequantizeRowsFp8", {{"packed", &packed}, {"x", &x}});
  if (CheckFp8Rows(check, x, packed)) return check.Twin(CudaTwins().dequantize_rows_fp8)(packed, x);
  cpu::DequantizeRowsFp8(packed, x);
}

namespace {

struct Segment {
  int64_t begin, end;  // rows
  int64_t weight;
};

// The non-empty segments of a grouped GEMM, checked against a's rows and b's groups.
std::vector<Segment> Segments(const ArgCheck& check, const Tensor& a, const Tensor& b,
                              std::span<const int64_t> rows, std::span<const int> weight) {
  check.ExpectRank(a, 2);
  check.ExpectRank(b, 3);
  check.Expect(
      weight.empty() ? static_cast<int64_t>(rows.size()) == b.dim(0) : weight.size() == rows.size(),
      "weight must name one group of b per segment (or be empty with one segment per "
      "group)");
  std::vector<Segment> segments;
  int64_t at = 0;
  for (size_t s = 0; s < rows.size(); ++s) {
    const int64_t w = weight.empty() ? static_cast<int64_t>(s) : weight[s];
    check.Expect(rows[s] >= 0 && w >= 0 && w < b.dim(0),
                 absl::StrCat("segment ", s, " has ", rows[s], " rows and group ", w));
    if (rows[s] > 0) segments.push_back({at, at + rows[s], w});
    at += rows[s];
  }
  check.Expect(at == a.dim(0), absl::StrCat("the segments hold ", at, " rows, a has ", a.dim(0)));
  return segments;  // each a Matmul: on the device of the operands
}

Tensor Group(const Tensor& b, int64_t g) { return b.Slice(g, g + 1).Reshape({b.dim(1), b.dim(2)}); }

}  // namespace

void GroupedMatmul(const Tensor& a, const Tensor& b, std::span<const int64_t> rows,
                   std::span<const int> weight, Tensor& out, const MatmulOptions& options) {
  const ArgCheck check("GroupedMatmul", {{"a", &a}, {"b", &b}, {"out", &out}});
  check.Expect(!options.trans_a, "trans_a is not supported");
  for (const Segment& s : Segments(check, a, b, rows, weight)) {
    Tensor o = out.Slice(s.begin, s.end);
    Matmul(a.Slice(s.begin, s.end), Group(b, s.weight), o, options);
  }
}

void GroupedMatmulBackward(const Tensor& a, const Tensor& b, const Tensor& dout,
                           std::span<const int64_t> rows, std::span<const int> weight, Tensor* da,
                           Tensor* db, const MatmulOptions& options) {
  const ArgCheck check("GroupedMatmulBackward", {{"a", &a}, {"b", &b}, {"dout", &dout}});
  check.Expect(!options.trans_a, "trans_a is not supported");
  for (const Segment& s : Segments(check, a, b, rows, weight)) {
    Tensor da_s = da != nullptr ? da->Slice(s.begin, s.end) : Tensor();
    Tensor db_s = db != nullptr ? Group(*db, s.weight) : Tensor();
    MatmulBackward(a.Slice(s.begin, s.end), Group(b, s.weight), dout.Slice(s.begin, s.end),
                   da != nullptr ? &da_s : nullptr, db != nullptr ? &db_s : nullptr, options);
  }
}

}  // namespace loom::runtime::kernels
