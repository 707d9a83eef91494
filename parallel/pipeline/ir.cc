#include "parallel/pipeline/ir.h"

#include "absl/strings/str_cat.h"
#include "runtime/base/check.h"

namespace loom::parallel::pipeline {

const char* OpKindName(OpKind kind) {
  switch (kind) {
    case OpKind::kForward:
      return "F";
    case OpKind::kBackwardInput:
      return "B";
    case OpKind::kBackwardWeight:
      return "W";
    case OpKind::kSendActivation:
      return "send_act";
    case OpKind::kRecvActivation:
      return "recv_act";
    case OpKind::kSendGradient:
      return "send_grad";
    case OpKind::kRecvGradient:
      return "recv_grad";
    case OpKind::kOptimizerStep:
      return "optimizer_step";
  }
  return "?";
}

bool IsCompute(OpKind kind) {
  return kind == OpKind::kForward || kind == OpKind::kBackwardInput ||
         kind == OpKind::kBackwardWeight;
}

std::string Instr::ToString() const {
  switch (kind) {
    case OpKind::kOptimizerStep:
      return OpKindName(kind);
    case OpKind::kSendActivation:
    case OpKind::kSendGradient:
      return absl::StrCat(OpKindName(kind), "(mb ", micro_batch, ", stage ", stage, " -> rank ",
                          peer, ")");
    case OpKind::kRecvActivation:
    case OpKind::kRecvGradient:
      return absl::StrCat(OpKindName(kind), "(mb ", micro_batch, ", stage ", stage, " <- rank ",
                          peer, ")");
    default:
      return absl::StrCat(OpKindName(kind), "(mb ", micro_batch, ", stage ", stage, ")");
  }
}

int Placement::rank_of(int stage) const {
  if (kind == Kind::kInterleaved) return stage % ranks;
  return stage < ranks ? stage : 2 * ranks - 1 - stage;
}

int Placement::chunk_of(int stage) const {
  if (kind == Kind::kInterleaved) return stage / ranks;
  return stage < ranks ? 0 : 1;
}

int Placement::stage_of(int rank, int chunk) const {
  if (kind == Kind::kInterleaved) return chunk * ranks + rank;
  return chunk == 0 ? rank : 2 * ranks - 1 - rank;
}

std::string Schedule::ToString(bool compute_only) const {
  std::string out;
  for (size_t r = 0; r < ranks.size(); ++r) {
    absl::StrAppend(&out, "rank ", r, ":");
    for (const Instr& i : ranks[r]) {
      if (compute_only && !IsCompute(i.kind)) continue;
      absl::StrAppend(&out, " ", OpKindName(i.kind), i.micro_batch,
                      placement.chunks > 1 ? absl::StrCat(".", placement.chunk_of(i.stage)) : "");
    }
    absl::StrAppend(&out, "\n");
  }
  return out;
}

namespace {

// The receive a compute instruction of rank r needs first, and the send of what it produced.
void AddRecv(const Placement& p, int r, const Instr& i, std::vector<Instr>& out) {
  const int mb = i.micro_batch, s = i.stage;
  if (i.kind == OpKind::kForward && s > 0 && p.rank_of(s - 1) != r) {
    out.push_back({OpKind::kRecvActivation, mb, s - 1, p.rank_of(s - 1)});
  }
  if (i.kind == OpKind::kBackwardInput && s + 1 < p.stages() && p.rank_of(s + 1) != r) {
    out.push_back({OpKind::kRecvGradient, mb, s + 1, p.rank_of(s + 1)});
  }
}

void AddSend(const Placement& p, int r, const Instr& i, std::vector<Instr>& out) {
  const int mb = i.micro_batch, s = i.stage;
  if (i.kind == OpKind::kForward && s + 1 < p.stages() && p.rank_of(s + 1) != r) {
    out.push_back({OpKind::kSendActivation, mb, s, p.rank_of(s + 1)});
  }
  if (i.kind == OpKind::kBackwardInput && s > 0 && p.rank_of(s - 1) != r) {
    out.push_back({OpKind::kSendGradient, mb, s, p.rank_of(s - 1)});
  }
}

}  // namespace

void InsertTransfers(Schedule& schedule) {
  const Placement& p = schedule.placement;
  for (size_t r = 0; r < schedule.ranks.size(); ++r) {
    const std::vector<Instr>& in = schedule.ranks[r];
    const int rank = static_cast<int>(r);
    std::vector<Instr> out;
    for (size_t k = 0; k < in.size(); ++k) {
      const Instr& i = in[k];
      LOOM_CHECK(IsCompute(i.kind) || i.kind == OpKind::kOptimizerStep)
          << "InsertTransfers on a schedule that has transfers already: " << i.ToString();
      if (!i.paired) {
        AddRecv(p, rank, i, out);
        out.push_back(i);
        AddSend(p, rank, i, out);
        continue;
      }
      LOOM_CHECK(i.kind == OpKind::kForward && k + 1 < in.size() &&
                 in[k + 1].kind == OpKind::kBackwardInput)
          << "a paired instruction must be an F followed by a B: " << i.ToString();
      const Instr& b = in[++k];
      AddRecv(p, rank, i, out);
      AddRecv(p, rank, b, out);
      out.push_back(i);
      out.push_back(b);
      AddSend(p, rank, i, out);
      AddSend(p, rank, b, out);
    }
    schedule.ranks[r] = std::move(out);
  }
}

}  // namespace loom::parallel::pipeline
