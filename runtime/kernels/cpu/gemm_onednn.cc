// GEMM provider: oneDNN. f32 through dnnl_sgemm, bf16 through the matmul primitive (one per shape
// and thread, cached). Fastest f32 GEMM measured on both CPUs seen (docs/kernels.md), and the only
// Debian-packaged library with a bf16 GEMM: AMX tiles on Intel Sapphire Rapids and later,
// VDPBF16PS on AMD Zen 4 and later (1.8x its f32 rate there). Intel CPUs with AVX512_BF16 but no
// AMX run oneDNN's bf16 at about 0.6x f32, so there bf16 operands are widened and go to Sgemm.
#include <string>
#include <tuple>

#include "absl/container/flat_hash_map.h"
#include "absl/strings/str_cat.h"
#include "oneapi/dnnl/dnnl.hpp"
#include "runtime/base/check.h"
#include "runtime/base/env.h"
#include "runtime/base/logging.h"
#include "runtime/cpu_info.h"
#include "runtime/kernels/cpu/gemm.h"
#include "runtime/vectorize.h"

namespace loom::runtime::kernels::cpu {
namespace {

const char* IsaName() {
  switch (dnnl_get_effective_cpu_isa()) {
    case dnnl_cpu_isa_avx512_core_amx:
      return "avx512_core_amx";
    case dnnl_cpu_isa_avx512_core_bf16:
      return "avx512_core_bf16";
    case dnnl_cpu_isa_avx512_core_vnni:
      return "avx512_core_vnni";
    case dnnl_cpu_isa_avx512_core:
      return "avx512_core";
    case dnnl_cpu_isa_avx2:
      return "avx2";
    default:
      return "other";
  }
}

bool DecideBf16() {
  const CpuInfo& cpu = HostCpu();
  const bool fast = cpu.amx_bf16 || (cpu.avx512_bf16 && cpu.vendor == "AuthenticAMD");
  bool native = fast;
  const std::string mode = base::GetEnv("LOOM_BF16_GEMM").value_or("");
  if (mode == "native" || mode == "f32") {
    native = mode == "native";
  } else if (!mode.empty()) {
    LOOM_LOG(WARNING) << "LOOM_BF16_GEMM=" << mode << " is not native or f32; ignoring it";
  }
  LOOM_LOG(INFO) << "bf16 GEMM: " << (native ? "native bf16 (oneDNN " : "widened to f32 (oneDNN ")
                 << IsaName() << ") on " << cpu.Summary()
                 << (mode == "native" || mode == "f32" ? ", set by LOOM_BF16_GEMM" : "");
  return native;
}

// A matmul primitive for one shape, alpha and beta (alpha as output scale, beta as a sum post-op).
struct Bf16Matmul {
  dnnl::matmul primitive;
  dnnl::memory::desc a, b, c;
};

using Key =
    std::tuple<bool, bool, int64_t, int64_t, int64_t, int64_t, int64_t, int64_t, float, float>;

const dnnl::engine& Engine() {
  static const dnnl::engine* engine = new dnnl::engine(dnnl::engine::kind::cpu, 0);
  return *engine;
}

Bf16Matmul MakeBf16Matmul(const GemmShape& s, float alpha, float beta) {
  using dt = dnnl::memory::data_type;
  Bf16Matmul mm;
  mm.a =
      dnnl::memory::desc({s.m, s.k}, dt::bf16,
                         s.trans_a ? dnnl::memory::dims{1, s.lda} : dnnl::memory::dims{s.lda, 1});
  mm.b =
      dnnl::memory::desc({s.k, s.n}, dt::bf16,
                         s.trans_b ? dnnl::memory::dims{1, s.ldb} : dnnl::memory::dims{s.ldb, 1});
  mm.c = dnnl::memory::desc({s.m, s.n}, dt::f32, dnnl::memory::dims{s.ldc, 1});
  dnnl::primitive_attr attr;
  if (alpha != 1.0f) attr.set_output_scales(0, {alpha});
  if (beta != 0.0f) {
    dnnl::post_ops ops;
    ops.append_sum(beta);
    attr.set_post_ops(ops);
  }
  mm.primitive = dnnl::matmul(
      dnnl::matmul::primitive_desc(dnnl::matmul::desc(mm.a, mm.b, mm.c), attr, Engine()));
  return mm;
}

// c[i, j] *= scale over an m x n block with leading dimension ldc.
LOOM_VECTORIZED void ScaleRows(float* c, int64_t m, int64_t n, int64_t ldc, float scale) {
  for (int64_t i = 0; i < m; ++i) {
    float* row = c + i * ldc;
    for (int64_t j = 0; j < n; ++j) row[j] *= scale;
  }
}

}  // namespace

void Sgemm(const GemmShape& s, float alpha, const float* a, const float* b, float beta, float* c) {
  const dnnl_status_t status = dnnl_sgemm(s.trans_a ? 'T' : 'N', s.trans_b ? 'T' : 'N', s.m, s.n,
                                          s.k, alpha, a, s.lda, b, s.ldb, beta, c, s.ldc);
  LOOM_CHECK(status == dnnl_success) << "dnnl_sgemm failed with status " << status;
}

bool GemmBf16Available() {
  static const bool native = DecideBf16();
  return native;
}

void GemmBf16(const GemmShape& s, float alpha, const uint16_t* a, const uint16_t* b, float beta,
              float* c) {
  // oneDNN 2.6 runs a matmul with an output scale on a slower kernel than its AMX brgemm (2x as
  // long for attention's scaled Q·Kᵀ blocks, kernels_bench BM_AttentionForward/bf16): where the
  // scale can come after (nothing to add), the product is scaled in place instead.
  const float scale_after = beta == 0.0f ? alpha : 1.0f;
  if (scale_after != 1.0f) alpha = 1.0f;
  // Per thread: primitives may run concurrently, but the cache and stream are not shared.
  thread_local absl::flat_hash_map<Key, Bf16Matmul> cache;
  thread_local dnnl::stream stream(Engine());
  const Key key{s.trans_a, s.trans_b, s.m, s.n, s.k, s.lda, s.ldb, s.ldc, alpha, beta};
  auto it = cache.find(key);
  if (it == cache.end()) it = cache.emplace(key, MakeBf16Matmul(s, alpha, beta)).first;
  const Bf16Matmul& mm = it->second;
  mm.primitive.execute(stream,
                       {{DNNL_ARG_SRC, dnnl::memory(mm.a, Engine(), const_cast<uint16_t*>(a))},
                        {DNNL_ARG_WEIGHTS, dnnl::memory(mm.b, Engine(), const_cast<uint16_t*>(b))},
                        {DNNL_ARG_DST, dnnl::memory(mm.c, Engine(), c)}});
  stream.wait();
  if (scale_after != 1.0f) ScaleRows(c, s.m, s.n, s.ldc, scale_after);
}

absl::string_view GemmProviderName() {
  static const std::string* name = [] {
    const dnnl_version_t* v = dnnl_version();
    return new std::string(
        absl::StrCat("onednn ", v->major, ".", v->minor, ".", v->patch, " (", IsaName(), ")"));
  }();
  return *name;
}

}  // namespace loom::runtime::kernels::cpu
