#include "parallel/pipeline/trace.h"

#include <algorithm>
#include <limits>

#include "absl/strings/str_cat.h"
#include "runtime/base/status_macros.h"
#include "runtime/io/file.h"

namespace loom::parallel::pipeline {

using runtime::DType;
using runtime::MemoryTag;
using runtime::Tensor;

namespace {

// kind, micro-batch, stage, peer, start, end, stash and held bytes, dp bucket, dp gather
constexpr int kWords = 10;

}  // namespace

absl::Status WriteChromeTrace(const std::vector<TraceEvent>& mine, comm::Communicator& world,
                              const std::string& path) {
  const int size = world.size();
  Tensor count =
      Tensor::FromVector<int64_t>({1}, {static_cast<int64_t>(mine.size())}, MemoryTag::kComm);
  Tensor counts = Tensor::Empty({size}, DType::kI64, MemoryTag::kComm);
  LOOM_RETURN_IF_ERROR(world.AllGather(count, counts)->Wait());
  const int64_t* n = counts.data<int64_t>();
  const int64_t most = std::max<int64_t>(1, *std::max_element(n, n + size));
  Tensor words = Tensor::Zeros({most * kWords}, DType::kI64, MemoryTag::kComm);
  for (size_t e = 0; e < mine.size(); ++e) {
    const TraceEvent& ev = mine[e];
    int64_t* w = words.data<int64_t>() + e * kWords;
    w[0] = static_cast<int64_t>(ev.instr.kind);
    w[1] = ev.instr.micro_batch, w[2] = ev.instr.stage, w[3] = ev.instr.peer;
    w[4] = ev.start_us, w[5] = ev.end_us, w[6] = ev.stash_bytes, w[7] = ev.held_bytes;
    w[8] = ev.dp_bucket, w[9] = ev.dp_gather ? 1 : 0;
  }
  Tensor all = Tensor::Empty({size * most * kWords}, DType::kI64, MemoryTag::kComm);
  LOOM_RETURN_IF_ERROR(world.AllGather(words, all)->Wait());
  if (world.rank() != 0) return absl::OkStatus();
  std::vector<std::vector<TraceEvent>> ranks(size);
  for (int r = 0; r < size; ++r) {
    for (int64_t e = 0; e < n[r]; ++e) {
      const int64_t* w = all.data<int64_t>() + (r * most + e) * kWords;
      ranks[r].push_back({.instr = {static_cast<OpKind>(w[0]), static_cast<int>(w[1]),
                                    static_cast<int>(w[2]), static_cast<int>(w[3])},
                          .start_us = w[4],
                          .end_us = w[5],
                          .dp_bucket = static_cast<int>(w[8]),
                          .dp_gather = w[9] != 0,
                          .stash_bytes = w[6],
                          .held_bytes = w[7]});
    }
  }
  return runtime::io::WriteFileAtomic(path, ChromeTraceJson(ranks));
}

std::string ChromeTraceJson(const std::vector<std::vector<TraceEvent>>& ranks) {
  int64_t origin = std::numeric_limits<int64_t>::max();
  bool dp_track = false;
  for (const auto& events : ranks) {
    for (const TraceEvent& e : events) {
      origin = std::min(origin, e.start_us);
      dp_track = dp_track || e.dp_bucket >= 0;
    }
  }
  const int n = static_cast<int>(ranks.size());
  std::string json = "{\"traceEvents\": [\n";
  auto track = [&](int tid, const std::string& name) {
    absl::StrAppend(&json, tid == 0 ? "" : ",\n",
                    "{\"name\": \"thread_name\", \"ph\": \"M\", \"pid\": 0, \"tid\": ", tid,
                    ", \"args\": {\"name\": \"", name, "\"}}");
  };
  for (int r = 0; r < n; ++r) {
    track(r, absl::StrCat("rank ", r));
    if (dp_track) track(n + r, absl::StrCat("rank ", r, " dp"));  // collectives overlap ops
  }
  for (int r = 0; r < n; ++r) {
    for (const TraceEvent& e : ranks[r]) {
      const Instr& i = e.instr;
      const bool dp = e.dp_bucket >= 0;  // a reduction or a gather, on the rank's dp track
      std::string name =
          dp ? absl::StrCat(e.dp_gather ? "gather" : "reduce", " bucket ", e.dp_bucket)
          : IsCompute(i.kind) ? absl::StrCat(OpKindName(i.kind), i.micro_batch, " s", i.stage)
                              : i.ToString();
      const char* category = !dp ? OpKindName(i.kind) : e.dp_gather ? "dp_gather" : "dp_reduce";
      absl::StrAppend(&json, ",\n{\"name\": \"", name, "\", \"cat\": \"", category,
                      "\", \"ph\": \"X\", \"pid\": 0, \"tid\": ", dp ? n + r : r,
                      ", \"ts\": ", e.start_us - origin,
                      ", \"dur\": ", std::max<int64_t>(e.end_us - e.start_us, 1),
                      ", \"args\": {\"micro_batch\": ", i.micro_batch, ", \"stage\": ", i.stage,
                      ", \"stash_bytes\": ", e.stash_bytes, ", \"held_bytes\": ", e.held_bytes,
                      dp ? absl::StrCat(", \"rank\": ", r, ", \"bucket\": ", e.dp_bucket) : "",
                      "}}");
    }
  }
  absl::StrAppend(&json, "\n]}\n");
  return json;
}

}  // namespace loom::parallel::pipeline
