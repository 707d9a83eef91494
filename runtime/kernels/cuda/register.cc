#include <cuda_runtime.h>

#include <algorithm>
#include <cstdlib>
#include <mutex>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "runtime/base/check.h"
#include "runtime/kernels/cpu/rows.h"
#include "runtime/kernels/cuda/cuda_kernels.h"
#include "runtime/kernels/cuda/device.h"
#include "runtime/kernels/cuda/launch.h"
#include "runtime/kernels/cuda/op_timer.h"
#include "runtime/kernels/cuda_twins.h"

namespace loom::runtime::kernels::cuda {
namespace {

const float* In(const Tensor& t) { return static_cast<const float*>(t.device_data()); }
float* Out(Tensor& t) { return static_cast<float*>(t.device_data()); }

ElemType ElemTypeOf(DType dtype) {
  return dtype == DType::kBF16  ? ElemType::kBF16
         : dtype == DType::kF16 ? ElemType::kF16
                                : ElemType::kF32;
}

void MatmulTwin(const Tensor& a, const Tensor& b, Tensor& out, int64_t m, int64_t n, int64_t k,
                const MatmulOptions& o) {
  // compute_dtype bf16: the entry point has rounded f32 operands to bf16 copies.
  LOOM_CHECK(o.compute_dtype == DType::kF32 || (a.dtype() == b.dtype()))
      << "Matmul on CUDA: operands of different dtypes";
  Gemm({.a = a.device_data(),
        .b = b.device_data(),
        .out = out.device_data(),
        .in = ElemTypeOf(a.dtype()),
        .out_type = ElemTypeOf(out.dtype()),
        .m = m,
        .n = n,
        .k = k,
        .trans_a = o.trans_a,
        .trans_b = o.trans_b,
        .alpha = o.alpha,
        .beta = o.beta,
        .bias = o.bias != nullptr ? In(*o.bias) : nullptr},
       nullptr);
}

// Bad input found by device kernels (CheckIndices): one record on the device, {what, position,
// value, limit}, and here the names of what was checked (what = index + 1).
class DeviceErrors {
 public:
  static DeviceErrors& Get() {
    static DeviceErrors* errors = new DeviceErrors();  // never destroyed, as the allocators
    return *errors;
  }

  int64_t* Record() {
    std::lock_guard<std::mutex> lock(mu_);
    if (!record_.defined()) {
      record_ = Tensor::Zeros({4}, DType::kI64, MemoryTag::kWorkspace, &DeviceAllocator());
    }
    return static_cast<int64_t*>(record_.device_data());
  }

  int64_t CodeOf(const char* what) {
    std::lock_guard<std::mutex> lock(mu_);
    for (size_t i = 0; i < names_.size(); ++i) {
      if (names_[i] == what) return static_cast<int64_t>(i) + 1;
    }
    names_.emplace_back(what);
    return static_cast<int64_t>(names_.size());
  }

  void Check() {
    std::lock_guard<std::mutex> lock(mu_);
    if (!record_.defined()) return;
    int64_t r[4] = {0, 0, 0, 0};
    const cudaError_t e = cudaMemcpy(r, record_.device_data(), sizeof(r), cudaMemcpyDeviceToHost);
    LOOM_CHECK(e == cudaSuccess) << "reading the device's error record: " << cudaGetErrorString(e);
    LOOM_CHECK(r[0] == 0) << names_[static_cast<size_t>(r[0] - 1)] << "[" << r[1] << "] = " << r[2]
                          << " is outside [0, " << r[3] << ")";
  }

 private:
  std::mutex mu_;
  std::vector<std::string> names_;
  Tensor record_;
};

EmbeddingArgs EmbeddingOf(const Tensor& ids, const Tensor& table, int64_t vocab_start) {
  return {.ids = static_cast<const int32_t*>(ids.device_data()),
          .n = ids.numel(),
          .cols = table.dim(1),
          .table_rows = table.dim(0),
          .vocab_start = vocab_start};
}

CrossEntropyArgs CrossEntropyOf(const Tensor& logits, const Tensor& targets, int64_t vocab_start) {
  const cpu::RowsCols rows = cpu::AsRows(logits);
  return {.logits = In(logits),
          .targets = static_cast<const int32_t*>(targets.device_data()),
          .rows = rows.rows,
          .vocab = rows.cols,
          .vocab_start = vocab_start};
}

// The token rows of `tokens` ([..., C]) and their slots in row_of [N, K].
MoeRowsArgs MoeRowsOf(const Tensor& row_of, const Tensor& tokens) {
  return {.row_of = static_cast<const int32_t*>(row_of.device_data()),
          .tokens = row_of.dim(0),
          .k = row_of.dim(1),
          .cols = tokens.dim(-1)};
}

AttentionArgs AttentionOf(const Tensor& qkv, int64_t num_heads) {
  return {.qkv = qkv.device_data(),
          .batch = qkv.dim(0),
          .seq = qkv.dim(1),
          .channels = qkv.dim(2) / 3,
          .heads = num_heads,
          .bf16 = qkv.dtype() == DType::kBF16};
}

// The flash kernels' arguments: the head sizes they are built for only.
AttentionArgs FlashOf(const Tensor& qkv, int64_t num_heads) {
  const AttentionArgs a = AttentionOf(qkv, num_heads);
  LOOM_CHECK(FlashAttentionSupports(a.channels / a.heads))
      << "FlashAttention on CUDA: head_dim " << a.channels / a.heads
      << " is not built (16, 32 or 64; --attention probs takes any)";
  return a;
}

// Which attention kernels run: the batched GEMMs on cuBLASLt (default), or one block per query
// row (LOOM_CUDA_ATTENTION=rows, the first, simplest form; kept to compare with). Read at every
// call, so a test can run both.
bool AttentionByRows(const AttentionArgs& a) {
  const char* choice = std::getenv("LOOM_CUDA_ATTENTION");
  const bool rows = choice != nullptr && std::string_view(choice) == "rows";
  LOOM_CHECK(choice == nullptr || rows || std::string_view(choice) == "gemm")
      << "LOOM_CUDA_ATTENTION must be gemm or rows, not '" << choice << "'";
  // The row kernels keep a row's scores in shared memory (48 KiB without opting in to more).
  LOOM_CHECK(!rows || (a.seq + kBlock) * static_cast<int64_t>(sizeof(float)) <= (48 << 10))
      << "Attention on CUDA (LOOM_CUDA_ATTENTION=rows): sequences of " << a.seq
      << " tokens are longer than the row kernels take";
  return rows;
}

// Device scratch of `elements` of `dtype`, back in the cache when the twin returns (the default
// stream orders its next use after the kernels queued here).
Tensor Scratch(int64_t elements, DType dtype) {
  return Tensor::Empty({elements}, dtype, MemoryTag::kWorkspace, &DeviceAllocator());
}

void RegisterLayerKernels(CudaTwinTable& twins) {
  twins.add_into = [](Tensor& dst, const Tensor& src) {
    Add(In(dst), In(src), Out(dst), dst.numel(), nullptr);
  };
  twins.scale = [](Tensor& x, float factor) { Scale(Out(x), factor, x.numel(), nullptr); };
  twins.convert = [](const Tensor& src, Tensor& dst) {
    Convert(src.device_data(), ElemTypeOf(src.dtype()), dst.device_data(), ElemTypeOf(dst.dtype()),
            src.numel(), nullptr);
  };
  twins.round_to_dtype = [](Tensor& x, DType dtype) {
    RoundTo(Out(x), ElemTypeOf(dtype), x.numel(), nullptr);
  };
  twins.bias_add = [](Tensor& x, const Tensor& bias) {
    BiasAdd(Out(x), In(bias), cpu::AsRows(x).rows, x.dim(-1), nullptr);
  };
  twins.bias_backward = [](const Tensor& dout, Tensor& dbias) {
    const int64_t rows = cpu::AsRows(dout).rows, cols = dout.dim(-1);
    Tensor partial = Scratch(ColumnSumChunks(rows) * cols, DType::kF32);
    BiasBackward(In(dout), Out(dbias), rows, cols, Out(partial), nullptr);
  };
  twins.bias_gelu_forward = [](Tensor& x, const Tensor& bias, Tensor& out) {
    BiasGeluForward(Out(x), In(bias), Out(out), cpu::AsRows(x).rows, x.dim(-1), nullptr);
  };
  twins.embedding_forward = [](const Tensor& ids, const Tensor& table, int64_t vocab_start, bool,
                               Tensor& out) {
    EmbeddingForward(EmbeddingOf(ids, table, vocab_start), In(table), Out(out), nullptr);
  };
  twins.embedding_backward = [](const Tensor& dout, const Tensor& ids, int64_t vocab_start, bool,
                                Tensor& dtable) {
    const EmbeddingArgs a = EmbeddingOf(ids, dtable, vocab_start);
    Tensor scratch =
        Scratch(static_cast<int64_t>((EmbeddingBackwardScratchBytes(a) + 3) / 4), DType::kI32);
    EmbeddingBackward(a, In(dout), Out(dtable), a.n > 0 ? scratch.device_data() : nullptr, nullptr);
  };
  twins.cross_entropy_stats = [](const Tensor& logits, const Tensor& targets, int64_t vocab_start,
                                 Tensor& row_max, Tensor& sum_exp, Tensor& target_logit) {
    CrossEntropyStats(CrossEntropyOf(logits, targets, vocab_start), Out(row_max), Out(sum_exp),
                      Out(target_logit), nullptr);
  };
  twins.cross_entropy_rescale = [](const Tensor& local_max, const Tensor& global_max,
                                   Tensor& sum_exp) {
    CrossEntropyRescale(In(local_max), In(global_max), Out(sum_exp), sum_exp.numel(), nullptr);
  };
  twins.cross_entropy_loss = [](const Tensor& row_max, const Tensor& sum_exp,
                                const Tensor& target_logit, Tensor& losses) {
    CrossEntropyLoss(In(row_max), In(sum_exp), In(target_logit), Out(losses), losses.numel(),
                     nullptr);
  };
  twins.cross_entropy_backward = [](const Tensor& logits, const Tensor& targets,
                                    int64_t vocab_start, const Tensor& row_max,
                                    const Tensor& sum_exp, const Tensor& dloss, Tensor& dlogits) {
    CrossEntropyBackward(CrossEntropyOf(logits, targets, vocab_start), In(row_max), In(sum_exp),
                         In(dloss), Out(dlogits), nullptr);
  };
  twins.attention_forward = [](const Tensor& qkv, int64_t num_heads, Tensor& out, Tensor& probs) {
    const AttentionArgs a = AttentionOf(qkv, num_heads);
    if (AttentionByRows(a)) {
      AttentionForward(a, Out(out), probs.device_data(), nullptr);
      return;
    }
    Tensor scores = a.bf16 ? Scratch(a.heads * a.seq * a.seq, DType::kF32) : Tensor();
    AttentionForwardGemm(a, Out(out), probs.device_data(), a.bf16 ? Out(scores) : nullptr, nullptr);
  };
  twins.attention_backward = [](const Tensor& dout, const Tensor& qkv, const Tensor& probs,
                                int64_t num_heads, Tensor& dqkv) {
    const AttentionArgs a = AttentionOf(qkv, num_heads);
    if (AttentionByRows(a)) {
      Tensor dscores = Scratch(probs.numel(), DType::kF32);
      AttentionBackward(a, In(dout), probs.device_data(), Out(dscores), Out(dqkv), nullptr);
      return;
    }
    const int64_t per_batch = a.heads * a.seq * a.seq;
    Tensor dscores = Scratch(per_batch, DType::kF32);
    Tensor ds16 = a.bf16 ? Scratch(per_batch, DType::kBF16) : Tensor();
    Tensor dout16 = a.bf16 ? Scratch(dout.numel(), DType::kBF16) : Tensor();
    AttentionBackwardGemm(a, In(dout), probs.device_data(),
                          {.dscores = Out(dscores),
                           .ds16 = a.bf16 ? ds16.device_data() : nullptr,
                           .dout16 = a.bf16 ? dout16.device_data() : nullptr},
                          Out(dqkv), nullptr);
  };
  twins.adamw_many = [](std::span<const AdamWTensors> tensors, const AdamWConfig& config,
                        int64_t step) {
    std::vector<int64_t> sizes;
    for (const AdamWTensors& t : tensors) sizes.push_back(t.master.numel());
    const AdamWStep k = MakeAdamWStep(config, step);
    AdamWConfig no_decay = config;
    no_decay.weight_decay = 0.0f;
    const float undecayed = MakeAdamWStep(no_decay, step).decay;
    for (const MultiTensorLaunch& l : PlanMultiTensorLaunches(sizes)) {
      AdamWManyArgs a{};
      for (size_t j = 0; j < l.tensors.size(); ++j) {
        const AdamWTensors& t = tensors[static_cast<size_t>(l.tensors[j])];
        a.master[j] = static_cast<float*>(t.master.device_data());
        a.grad[j] = In(t.grad);
        a.m[j] = static_cast<float*>(t.m.device_data());
        a.v[j] = static_cast<float*>(t.v.device_data());
        a.n[j] = t.master.numel();
        a.decay[j] = t.decay ? k.decay : undecayed;
      }
      for (size_t b = 0; b < l.chunks.size(); ++b) {
        a.chunk_slot[b] = static_cast<uint8_t>(l.chunks[b].slot);
        a.chunk_index[b] = static_cast<int32_t>(l.chunks[b].index);
      }
      a.chunks = static_cast<int>(l.chunks.size());
      AdamWUpdateMany(a, k, nullptr);
    }
  };
  twins.moe_permute = [](const Tensor& x, const Tensor& row_of, Tensor& out) {
    MoePermute(MoeRowsOf(row_of, x), In(x), Out(out), nullptr);
  };
  twins.moe_combine = [](const Tensor& y, const Tensor& row_of, const Tensor* gates, Tensor& out) {
    MoeCombine(MoeRowsOf(row_of, out), In(y), gates != nullptr ? In(*gates) : nullptr, Out(out),
               nullptr);
  };
  twins.moe_combine_backward = [](const Tensor& dout, const Tensor& y, const Tensor& row_of,
                                  const Tensor& gates, Tensor& dy, Tensor& dgates) {
    MoeCombineBackward(MoeRowsOf(row_of, dout), In(dout), In(y), In(gates), Out(dy), Out(dgates),
                       nullptr);
  };
  twins.quantize_rows_fp8 = [](const Tensor& x, Tensor& packed) {
    QuantizeRowsFp8({.rows = x.dim(0), .cols = x.dim(1), .width = packed.dim(1)}, In(x),
                    static_cast<uint8_t*>(packed.device_data()), nullptr);
  };
  twins.dequantize_rows_fp8 = [](const Tensor& packed, Tensor& x) {
    DequantizeRowsFp8({.rows = x.dim(0), .cols = x.dim(1), .width = packed.dim(1)},
                      static_cast<const uint8_t*>(packed.device_data()), Out(x), nullptr);
  };
  twins.flash_attention_forward = [](const Tensor& qkv, int64_t num_heads, Tensor& out,
                                     Tensor& lse) {
    const AttentionArgs a = FlashOf(qkv, num_heads);
    FlashAttentionForward(a, Out(out), Out(lse), nullptr);
  };
  twins.flash_attention_backward = [](const Tensor& dout, const Tensor& qkv, const Tensor& out,
                                      const Tensor& lse, int64_t num_heads, Tensor& dqkv) {
    const AttentionArgs a = FlashOf(qkv, num_heads);
    Tensor delta = Scratch(lse.numel(), DType::kF32);
    FlashAttentionBackward(a, In(dout), In(out), In(lse), Out(delta), Out(dqkv), nullptr);
  };
  twins.quantize_fp8 = [](const Tensor& x, Fp8Blocks blocks, Tensor& q, Tensor& scales) {
    Tensor amax = blocks == Fp8Blocks::kTensor ? Scratch(1, DType::kF32) : Tensor();
    QuantizeFp8({.x = x.device_data(),
                 .bf16 = x.dtype() == DType::kBF16,
                 .rows = x.dim(0),
                 .cols = x.dim(1),
                 .blocks = blocks,
                 .q = static_cast<uint8_t*>(q.device_data()),
                 .scales = Out(scales),
                 .scale_elements = scales.numel(),
                 .amax = blocks == Fp8Blocks::kTensor ? Out(amax) : nullptr},
                nullptr);
  };
  twins.fp8_matmul = [](const Tensor& a, const Tensor& scale_a, Fp8Blocks a_blocks, const Tensor& b,
                        const Tensor& scale_b, Fp8Blocks b_blocks, Tensor& out) {
    Fp8Gemm({.a = a.device_data(),
             .scale_a = In(scale_a),
             .b = b.device_data(),
             .scale_b = In(scale_b),
             .out = out.device_data(),
             .out_type = ElemTypeOf(out.dtype()),
             .m = a.dim(0),
             .n = b.dim(0),
             .k = a.dim(1),
             .a_blocks = a_blocks,
             .b_blocks = b_blocks},
            nullptr);
  };
  twins.check_indices = [](const Tensor& ids, int64_t limit, const char* what) {
    DeviceErrors& errors = DeviceErrors::Get();
    CheckIndices(static_cast<const int32_t*>(ids.device_data()), ids.numel(), limit,
                 errors.CodeOf(what), errors.Record(), nullptr);
  };
  twins.check_errors = [] { DeviceErrors::Get().Check(); };
}

}  // namespace

void RegisterKernels() {
  CudaTwinTable& twins = CudaTwins();
  RegisterOpTimer(twins);
  twins.add = [](const Tensor& a, const Tensor& b, Tensor& out) {
    Add(In(a), In(b), Out(out), a.numel(), nullptr);
  };
  twins.gelu_forward = [](const Tensor& x, Tensor& out) {
    GeluForward(In(x), Out(out), x.numel(), nullptr);
  };
  twins.gelu_backward = [](const Tensor& dout, const Tensor& x, Tensor& dx, bool accumulate) {
    if (x.dtype() == DType::kBF16) {
      return GeluBackwardBf16(In(dout), static_cast<const uint16_t*>(x.device_data()), Out(dx),
                              x.numel(), nullptr, accumulate);
    }
    GeluBackward(In(dout), In(x), Out(dx), x.numel(), nullptr, accumulate);
  };
  twins.matmul = MatmulTwin;
  RegisterLayerKernels(twins);
  twins.sums_of_squares = [](std::span<const Tensor> xs, double* out) {
    // Every tensor's total into one device buffer, read back once; the block sums' scratch is
    // reused in stream order.
    int64_t blocks = 1;
    for (const Tensor& x : xs) blocks = std::max(blocks, SumOfSquaresBlocks(x.numel()));
    Tensor partial =
        Tensor::Empty({blocks}, DType::kI64, MemoryTag::kWorkspace, &DeviceAllocator());
    Tensor totals = Tensor::Empty({static_cast<int64_t>(xs.size())}, DType::kI64,
                                  MemoryTag::kWorkspace, &DeviceAllocator());
    double* t = static_cast<double*>(totals.device_data());
    for (size_t i = 0; i < xs.size(); ++i) {
      SumOfSquares(xs[i].device_data(), ElemTypeOf(xs[i].dtype()), xs[i].numel(),
                   static_cast<double*>(partial.device_data()), t + i, nullptr);
    }
    const cudaError_t e = cudaMemcpy(out, t, xs.size() * sizeof(double), cudaMemcpyDeviceToHost);
    LOOM_CHECK(e == cudaSuccess) << "SumsOfSquares on CUDA: " << cudaGetErrorString(e);
  };
  twins.sum_of_squares = [](const Tensor& x) {
    double total = 0.0;
    CudaTwins().sums_of_squares(std::span<const Tensor>(&x, 1), &total);
    return total;
  };
  twins.layer_norm_forward = [](const Tensor& x, const Tensor& w, const Tensor& b, float eps,
                                Tensor& out, Tensor& mean, Tensor& rstd) {
    LayerNormForward({.x = In(x),
                      .w = In(w),
                      .b = In(b),
                      .out = Out(out),
                      .mean = Out(mean),
                      .rstd = Out(rstd),
                      .rows = cpu::AsRows(x).rows,
                      .cols = x.dim(-1)},
                     eps, nullptr);
  };
  twins.layer_norm_backward = [](const Tensor& dout, const Tensor& x, const Tensor& w,
                                 const Tensor& mean, const Tensor& rstd, Tensor& dx, Tensor& dw,
                                 Tensor& db) {
    const int64_t rows = cpu::AsRows(x).rows, cols = x.dim(-1);
    Tensor partial = Scratch(ColumnSumChunks(rows) * cols, DType::kF32);
    LayerNormBackward({.dout = In(dout),
                       .x = In(x),
                       .w = In(w),
                       .mean = In(mean),
                       .rstd = In(rstd),
                       .dx = Out(dx),
                       .dw = Out(dw),
                       .db = Out(db),
                       .rows = rows,
                       .cols = cols,
                       .partial = Out(partial)},
                      nullptr);
  };
  twins.rms_norm_forward = [](const Tensor& x, const Tensor& w, float eps, Tensor& out,
                              Tensor& rstd) {
    RMSNormForward({.x = In(x),
                    .w = In(w),
                    .b = nullptr,
                    .out = Out(out),
                    .mean = nullptr,
                    .rstd = Out(rstd),
                    .rows = cpu::AsRows(x).rows,
                    .cols = x.dim(-1)},
                   eps, nullptr);
  };
  twins.rms_norm_backward = [](const Tensor& dout, const Tensor& x, const Tensor& w,
                               const Tensor& rstd, Tensor& dx, Tensor& dw) {
    const int64_t rows = cpu::AsRows(x).rows, cols = x.dim(-1);
    Tensor partial = Scratch(ColumnSumChunks(rows) * cols, DType::kF32);
    RMSNormBackward({.dout = In(dout),
                     .x = In(x),
                     .w = In(w),
                     .mean = nullptr,
                     .rstd = In(rstd),
                     .dx = Out(dx),
                     .dw = Out(dw),
                     .db = nullptr,
                     .rows = rows,
                     .cols = cols,
                     .partial = Out(partial)},
                    nullptr);
  };
  twins.swiglu_forward = [](const Tensor& gate, const Tensor& up, Tensor& out) {
    SwiGLUForward(In(gate), In(up), Out(out), gate.numel(), nullptr);
  };
  twins.swiglu_backward = [](const Tensor& dout, const Tensor& gate, const Tensor& up,
                             Tensor& dgate, Tensor& dup) {
    SwiGLUBackward(In(dout), In(gate), In(up), Out(dgate), Out(dup), gate.numel(), nullptr);
  };
  twins.sgd = [](Tensor& param, const Tensor& grad, Tensor& buffer, const SgdStep& step) {
    SgdUpdate(Out(param), In(grad), Out(buffer), step, param.numel(), nullptr);
  };
  twins.adamw = [](Tensor& master, const Tensor& grad, Tensor& m, Tensor& v,
                   const AdamWConfig& config, int64_t step, Tensor* copy_out) {
    AdamWUpdate({.master = Out(master),
                 .m = Out(m),
                 .v = Out(v),
                 .grad = In(grad),
                 .copy_bf16 = copy_out != nullptr ? static_cast<uint16_t*>(copy_out->device_data())
                                                  : nullptr},
                MakeAdamWStep(config, step), master.numel(), nullptr);
  };
}

}  // namespace loom::runtime::kernels::cuda
