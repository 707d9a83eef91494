// The GEMM twin on cuBLASLt: one column-major call per row-major product, no data moved
// (gemm_layout.h). One handle and a 32 MiB workspace per process; descriptors, layouts and the
// heuristic's algorithm made once per kind of product and kept (PlanFor).
#include <cublasLt.h>
#include <cuda_runtime.h>

#include <array>
#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <utility>

#include "runtime/base/check.h"
#include "runtime/kernels/cuda/cuda_kernels.h"
#include "runtime/kernels/cuda/gemm_layout.h"

namespace loom::runtime::kernels::cuda {
namespace {

void Check(cublasStatus_t status, const char* what) {
  LOOM_CHECK(status == CUBLAS_STATUS_SUCCESS)
      << "cuBLASLt " << what << ": " << cublasLtGetStatusString(status);
}

cudaDataType_t CudaType(ElemType t) {
  switch (t) {
    case ElemType::kBF16:
      return CUDA_R_16BF;
    case ElemType::kF16:
      return CUDA_R_16F;
    default:
      return CUDA_R_32F;
  }
}

struct LtContext {
  cublasLtHandle_t handle = nullptr;
  void* workspace = nullptr;
  size_t workspace_bytes = size_t{32} << 20;
};

LtContext& Context() {
  static LtContext* context = [] {
    auto* c = new LtContext;
    Check(cublasLtCreate(&c->handle), "create");
    const cudaError_t e = cudaMalloc(&c->workspace, c->workspace_bytes);
    LOOM_CHECK(e == cudaSuccess) << "cuBLASLt workspace: " << cudaGetErrorString(e);
    return c;
  }();
  return *context;
}

// A column-major layout of `rows` x `cols` with leading dimension `ld`; `batch` of them, each
// `stride` elements after the previous.
cublasLtMatrixLayout_t Layout(ElemType type, int64_t rows, int64_t cols, int64_t ld, int64_t batch,
                              int64_t stride) {
  cublasLtMatrixLayout_t layout = nullptr;
  Check(cublasLtMatrixLayoutCreate(&layout, CudaType(type), static_cast<uint64_t>(rows),
                                   static_cast<uint64_t>(cols), ld),
        "layout");
  if (batch > 1) {
    const int32_t count = static_cast<int32_t>(batch);
    Check(cublasLtMatrixLayoutSetAttribute(layout, CUBLASLT_MATRIX_LAYOUT_BATCH_COUNT, &count,
                                           sizeof(count)),
          "batch count");
    Check(cublasLtMatrixLayoutSetAttribute(layout, CUBLASLT_MATRIX_LAYOUT_STRIDED_BATCH_OFFSET,
                                           &stride, sizeof(stride)),
          "batch stride");
  }
  return layout;
}

// The alignment cuBLASLt may assume of an operand: the largest power of two up to 256 dividing
// its address and, in a batch, every product's offset. (Its default, 256, admits algorithms that
// fault on operands less aligned, such as a head's columns inside the fused qkv.)
uint32_t Alignment(const void* p, int64_t stride_elements, size_t element_bytes, int64_t batch) {
  uint64_t bits = reinterpret_cast<uintptr_t>(p) | 256;
  if (batch > 1) bits |= static_cast<uint64_t>(stride_elements) * element_bytes;
  return static_cast<uint32_t>(bits & (~bits + 1));  // the lowest set bit
}

size_t ElementBytes(ElemType t) { return t == ElemType::kF32 ? 4 : 2; }

}  // namespace

namespace {

// What cuBLASLt needs for one kind of product, made once per kind: the descriptor, the three
// layouts and the heuristic's algorithm. Alpha, beta and the pointers come with each call.
// With a bias the descriptor carries its epilogue (the bias pointer is set under `mu` for each
// call), or `bias_epilogue` is false and the bias is added by a kernel after the product.
struct GemmPlan {
  cublasLtMatmulDesc_t desc = nullptr;
  cublasLtMatrixLayout_t a = nullptr, b = nullptr, c = nullptr;
  cublasLtMatmulAlgo_t algo = {};
  bool bias_epilogue = false;
  std::unique_ptr<std::mutex> mu = std::make_unique<std::mutex>();
};

// Whether a bias may go to cuBLASLt's epilogue: its kernels read the vector in 16-byte pieces,
// and a parameter inside a data-parallel bucket may start anywhere.
bool BiasAligned(const float* bias) { return reinterpret_cast<uintptr_t>(bias) % 16 == 0; }

// Everything a plan depends on: types, shape, transpositions, strides, batch, alignments, bias
// (none, unaligned: added after the product, or aligned: in the epilogue where offered).
using PlanKey = std::array<int64_t, 18>;

PlanKey KeyOf(const GemmArgs& g, uint32_t align_a, uint32_t align_b, uint32_t align_c) {
  return {static_cast<int64_t>(g.in),
          static_cast<int64_t>(g.out_type),
          g.m,
          g.n,
          g.k,
          g.trans_a,
          g.trans_b,
          g.lda,
          g.ldb,
          g.ldc,
          g.batch,
          g.stride_a,
          g.stride_b,
          g.stride_out,
          align_a,
          align_b,
          align_c,
          g.bias == nullptr     ? 0
          : BiasAligned(g.bias) ? 2
                                : 1};
}

// The plan for `g`, with the bias epilogue when `bias_epilogue`; *found_algo false when the
// heuristic has no algorithm for it.
GemmPlan MakePlan(const GemmArgs& g, uint32_t align_a, uint32_t align_b, uint32_t align_c,
                  bool bias_epilogue, bool* found_algo) {
  LtContext& lt = Context();
  GemmPlan plan;
  plan.bias_epilogue = bias_epilogue;
  Check(cublasLtMatmulDescCreate(&plan.desc, CUBLAS_COMPUTE_32F, CUDA_R_32F), "descriptor");
  if (bias_epilogue) {
    const cublasLtEpilogue_t epilogue = CUBLASLT_EPILOGUE_BIAS;
    const cudaDataType_t bias_type = CUDA_R_32F;
    Check(cublasLtMatmulDescSetAttribute(plan.desc, CUBLASLT_MATMUL_DESC_EPILOGUE, &epilogue,
                                         sizeof(epilogue)),
          "epilogue");
    Check(cublasLtMatmulDescSetAttribute(plan.desc, CUBLASLT_MATMUL_DESC_BIAS_DATA_TYPE, &bias_type,
                                         sizeof(bias_type)),
          "bias type");
  }
  const ColumnMajorGemm c = ToColumnMajor(RowMajorGemm{.m = g.m,
                                                       .n = g.n,
                                                       .k = g.k,
                                                       .trans_a = g.trans_a,
                                                       .trans_b = g.trans_b,
                                                       .lda = g.lda,
                                                       .ldb = g.ldb,
                                                       .ldc = g.ldc,
                                                       .stride_a = g.stride_a,
                                                       .stride_b = g.stride_b,
                                                       .stride_out = g.stride_out});
  const cublasOperation_t op_a = c.trans_a ? CUBLAS_OP_T : CUBLAS_OP_N;
  const cublasOperation_t op_b = c.trans_b ? CUBLAS_OP_T : CUBLAS_OP_N;
  Check(cublasLtMatmulDescSetAttribute(plan.desc, CUBLASLT_MATMUL_DESC_TRANSA, &op_a, sizeof(op_a)),
        "transa");
  Check(cublasLtMatmulDescSetAttribute(plan.desc, CUBLASLT_MATMUL_DESC_TRANSB, &op_b, sizeof(op_b)),
        "transb");
  plan.a = Layout(g.in, c.rows_a, c.cols_a, c.ld_a, g.batch, c.stride_a);  // b's buffer
  plan.b = Layout(g.in, c.rows_b, c.cols_b, c.ld_b, g.batch, c.stride_b);  // a's buffer
  plan.c = Layout(g.out_type, c.rows_c, c.cols_c, c.ld_c, g.batch, c.stride_c);
  cublasLtMatmulPreference_t preference = nullptr;
  Check(cublasLtMatmulPreferenceCreate(&preference), "preference");
  Check(cublasLtMatmulPreferenceSetAttribute(preference, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES,
                                             &lt.workspace_bytes, sizeof(lt.workspace_bytes)),
        "workspace size");
  for (const auto& [attribute, bytes] :
       {std::pair{CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, align_a},
        std::pair{CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES, align_b},
        std::pair{CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, align_c},
        std::pair{CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES, align_c}}) {
    Check(cublasLtMatmulPreferenceSetAttribute(preference, attribute, &bytes, sizeof(bytes)),
          "alignment");
  }
  cublasLtMatmulHeuristicResult_t heuristic = {};
  int found = 0;
  const cublasStatus_t status = cublasLtMatmulAlgoGetHeuristic(
      lt.handle, plan.desc, plan.a, plan.b, plan.c, plan.c, preference, 1, &heuristic, &found);
  cublasLtMatmulPreferenceDestroy(preference);
  // The epilogue may be refused outright (CUBLAS_STATUS_NOT_SUPPORTED) rather than with no
  // algorithm: the caller then plans without it.
  if (!bias_epilogue) Check(status, "heuristic");
  *found_algo =
      status == CUBLAS_STATUS_SUCCESS && found > 0 && heuristic.state == CUBLAS_STATUS_SUCCESS;
  plan.algo = heuristic.algo;
  return plan;
}

// A plan for `g`: with the bias epilogue where asked, aligned and offered, else without.
GemmPlan MakePlan(const GemmArgs& g, uint32_t align_a, uint32_t align_b, uint32_t align_c) {
  bool found = false;
  if (g.bias != nullptr && BiasAligned(g.bias)) {
    GemmPlan fused = MakePlan(g, align_a, align_b, align_c, /*bias_epilogue=*/true, &found);
    if (found) return fused;
    cublasLtMatmulDescDestroy(fused.desc);
    for (cublasLtMatrixLayout_t layout : {fused.a, fused.b, fused.c}) {
      cublasLtMatrixLayoutDestroy(layout);
    }
  }
  GemmPlan plan = MakePlan(g, align_a, align_b, align_c, /*bias_epilogue=*/false, &found);
  LOOM_CHECK(found) << "cuBLASLt has no algorithm for a [" << g.m << ", " << g.k << "] x [" << g.k
                    << ", " << g.n << "] GEMM of these types";
  return plan;
}

// The plan for `g`'s kind, made on first use and kept for the process (a model has a few dozen
// kinds of product: making a plan costs a heuristic query, tens of microseconds).
const GemmPlan& PlanFor(const GemmArgs& g) {
  static std::mutex mu;
  static auto* plans = new std::map<PlanKey, GemmPlan>();
  const uint32_t align_a = Alignment(g.b, g.stride_b, ElementBytes(g.in), g.batch);  // b's buffer
  const uint32_t align_b = Alignment(g.a, g.stride_a, ElementBytes(g.in), g.batch);
  const uint32_t align_c = Alignment(g.out, g.stride_out, ElementBytes(g.out_type), g.batch);
  const PlanKey key = KeyOf(g, align_a, align_b, align_c);
  std::lock_guard<std::mutex> lock(mu);
  auto it = plans->find(key);
  if (it == plans->end()) it = plans->emplace(key, MakePlan(g, align_a, align_b, align_c)).first;
  return it->second;  // map nodes do not move
}

}  // namespace

void Gemm(const GemmArgs& g, Stream stream) {
  if (g.m == 0 || g.n == 0 || g.batch == 0) return;
  LOOM_CHECK(g.batch <= INT32_MAX) << "cuBLASLt: a batch of " << g.batch << " products";
  LOOM_CHECK(g.bias == nullptr || (g.batch == 1 && g.out_type == ElemType::kF32))
      << "cuBLASLt: a bias needs one product with an f32 out";
  LtContext& lt = Context();
  const GemmPlan& plan = PlanFor(g);
  auto matmul = [&] {
    Check(
        cublasLtMatmul(lt.handle, plan.desc, &g.alpha, g.b, plan.a, g.a, plan.b, &g.beta, g.out,
                       plan.c, g.out, plan.c, &plan.algo, lt.workspace, lt.workspace_bytes, stream),
        "matmul");
  };
  if (!plan.bias_epilogue) {
    matmul();
    // Without the epilogue: out's rows (ldc apart) each get the bias.
    if (g.bias != nullptr) {
      LOOM_CHECK(g.ldc == 0 || g.ldc == g.n) << "cuBLASLt: a bias after a product with padded rows";
      BiasAdd(static_cast<float*>(g.out), g.bias, g.m, g.n, stream);
    }
    return;
  }
  // The descriptor is shared by every call of this kind: its bias pointer is set and used under
  // the plan's lock (the call only enqueues).
  std::lock_guard<std::mutex> lock(*plan.mu);
  Check(cublasLtMatmulDescSetAttribute(plan.desc, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &g.bias,
                                       sizeof(g.bias)),
        "bias pointer");
  matmul();
}

void Fp8Gemm(const Fp8GemmArgs& g, Stream stream) {
  if (g.m == 0 || g.n == 0) return;
  LtContext& lt = Context();
  cublasLtMatmulDesc_t desc = nullptr;
  Check(cublasLtMatmulDescCreate(&desc, CUBLAS_COMPUTE_32F, CUDA_R_32F), "descriptor");
  // out = a · bᵀ: the call's A is b's buffer (K x N column-major, transposed), its B is a's (K x
  // M, as it is): the K-major "TN" form FP8 tensor cores take.
  const ColumnMajorGemm c = ToColumnMajor(g.m, g.n, g.k, /*trans_a=*/false, /*trans_b=*/true);
  const cublasOperation_t op_a = c.trans_a ? CUBLAS_OP_T : CUBLAS_OP_N;
  const cublasOperation_t op_b = c.trans_b ? CUBLAS_OP_T : CUBLAS_OP_N;
  Check(cublasLtMatmulDescSetAttribute(desc, CUBLASLT_MATMUL_DESC_TRANSA, &op_a, sizeof(op_a)),
        "transa");
  Check(cublasLtMatmulDescSetAttribute(desc, CUBLASLT_MATMUL_DESC_TRANSB, &op_b, sizeof(op_b)),
        "transb");
  // Scales follow their operands: the call's A scale is b's, its B scale a's; with block scales
  // b is 128 x 128 and a 1 x 128 (the entry point admits no other mix).
  const bool blocks = g.a_blocks == Fp8Blocks::k1x128;
  const struct {
    cublasLtMatmulDescAttributes_t pointer, mode;
    const void* scales;
    int32_t scale_mode;
  } operands[] = {{CUBLASLT_MATMUL_DESC_A_SCALE_POINTER, CUBLASLT_MATMUL_DESC_A_SCALE_MODE,
                   g.scale_b, CUBLASLT_MATMUL_MATRIX_SCALE_BLK128x128_32F},
                  {CUBLASLT_MATMUL_DESC_B_SCALE_POINTER, CUBLASLT_MATMUL_DESC_B_SCALE_MODE,
                   g.scale_a, CUBLASLT_MATMUL_MATRIX_SCALE_VEC128_32F}};
  for (const auto& o : operands) {
    Check(cublasLtMatmulDescSetAttribute(desc, o.pointer, &o.scales, sizeof(o.scales)),
          "scale pointer");
    if (blocks) {
      Check(cublasLtMatmulDescSetAttribute(desc, o.mode, &o.scale_mode, sizeof(o.scale_mode)),
            "scale mode");
    }
  }
  cublasLtMatrixLayout_t layout_a = nullptr, layout_b = nullptr, layout_c = nullptr;
  Check(cublasLtMatrixLayoutCreate(&layout_a, CUDA_R_8F_E4M3, c.rows_a, c.cols_a, c.ld_a),
        "layout");
  Check(cublasLtMatrixLayoutCreate(&layout_b, CUDA_R_8F_E4M3, c.rows_b, c.cols_b, c.ld_b),
        "layout");
  Check(cublasLtMatrixLayoutCreate(&layout_c, CudaType(g.out_type), c.rows_c, c.cols_c, c.ld_c),
        "layout");
  cublasLtMatmulPreference_t preference = nullptr;
  Check(cublasLtMatmulPreferenceCreate(&preference), "preference");
  Check(cublasLtMatmulPreferenceSetAttribute(preference, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES,
                                             &lt.workspace_bytes, sizeof(lt.workspace_bytes)),
        "workspace size");
  cublasLtMatmulHeuristicResult_t heuristic = {};
  int found = 0;
  Check(cublasLtMatmulAlgoGetHeuristic(lt.handle, desc, layout_a, layout_b, layout_c, layout_c,
                                       preference, 1, &heuristic, &found),
        "heuristic");
  LOOM_CHECK(found > 0) << "cuBLASLt has no FP8 algorithm for [" << g.m << ", " << g.k << "] x ["
                        << g.n << ", " << g.k << "]ᵀ with these scales on this GPU (FP8 GEMMs "
                        << "need FP8 tensor cores: sm_89 or newer, block scales sm_90)";
  const float alpha = 1.0f, beta = 0.0f;
  Check(
      cublasLtMatmul(lt.handle, desc, &alpha, g.b, layout_a, g.a, layout_b, &beta, g.out, layout_c,
                     g.out, layout_c, &heuristic.algo, lt.workspace, lt.workspace_bytes, stream),
      "FP8 matmul");
  cublasLtMatmulPreferenceDestroy(preference);
  cublasLtMatrixLayoutDestroy(layout_c);
  cublasLtMatrixLayoutDestroy(layout_b);
  cublasLtMatrixLayoutDestroy(layout_a);
  cublasLtMatmulDescDestroy(desc);
}

}  // namespace loom::runtime::kernels::cuda
