// Kernel benchmarks (Google Benchmark) at GPT shapes, with FLOP/s and bytes/s counters.
//
//   build/bench/kernels_bench --benchmark_filter=Sgemm
//
// BM_LoomMatmul and BM_CblasSgemm run the same GEMM on the same data, one through loom's wrapper
// and one as a direct cblas_sgemm call, so their ratio is the wrapper's overhead. Shapes are
// (M = B·T tokens, K, N) of the cpu-small (d 384) and gpt2-124m (d 768) models' linear layers.
#include <benchmark/benchmark.h>
#include <cblas.h>

#include <random>

#include "runtime/kernels/adamw.h"
#include "runtime/kernels/attention.h"
#include "runtime/kernels/elementwise.h"
#include "runtime/kernels/matmul.h"
#include "runtime/kernels/norm.h"
#include "runtime/parallel.h"
#include "runtime/tensor.h"

namespace loom::runtime::kernels {
namespace {

Tensor Random(const Shape& shape, uint32_t seed) {
  std::mt19937 gen(seed);
  std::normal_distribution<float> dist(0.0f, 1.0f);
  Tensor t = Tensor::Empty(shape, DType::kF32, MemoryTag::kActivation);
  for (int64_t i = 0; i < t.numel(); ++i) t.data<float>()[i] = dist(gen);
  return t;
}

// Random values rounded to `dtype`.
Tensor Random(const Shape& shape, uint32_t seed, DType dtype) {
  const Tensor f32 = Random(shape, seed);
  if (dtype == DType::kF32) return f32;
  Tensor t = Tensor::Empty(shape, dtype, MemoryTag::kActivation);
  Convert(f32, t);
  return t;
}

void GemmArgs(benchmark::internal::Benchmark* b) {
  // {M, K, N}: qkv, attention projection, MLP up, MLP down, LM head (vocab 4096).
  for (int64_t d : {384, 768}) {
    b->Args({2048, d, 3 * d});
    b->Args({2048, d, d});
    b->Args({2048, d, 4 * d});
    b->Args({2048, 4 * d, d});
  }
  b->Args({2048, 384, 4096});
  b->Args({4099, 33, 7});  // odd shape
}

void SetGemmCounters(benchmark::State& state, int64_t m, int64_t k, int64_t n) {
  state.counters["FLOP/s"] =
      benchmark::Counter(2.0 * m * n * k * state.iterations(), benchmark::Counter::kIsRate);
  state.counters["bytes/s"] = benchmark::Counter(4.0 * (m * k + k * n + m * n) * state.iterations(),
                                                 benchmark::Counter::kIsRate);
}

void BM_LoomMatmul(benchmark::State& state) {
  const int64_t m = state.range(0), k = state.range(1), n = state.range(2);
  Tensor a = Random({m, k}, 1), w = Random({n, k}, 2);
  Tensor out = Tensor::Empty({m, n}, DType::kF32, MemoryTag::kActivation);
  for (auto _ : state) {
    Matmul(a, w, out, {.trans_b = true});
    benchmark::DoNotOptimize(out.raw_data());
  }
  SetGemmCounters(state, m, k, n);
}
BENCHMARK(BM_LoomMatmul)->Apply(GemmArgs)->UseRealTime();

void BM_CblasSgemm(benchmark::State& state) {
  const int64_t m = state.range(0), k = state.range(1), n = state.range(2);
  Tensor a = Random({m, k}, 1), w = Random({n, k}, 2);
  Tensor out = Tensor::Empty({m, n}, DType::kF32, MemoryTag::kActivation);
  // The baseline is OpenBLAS's own threading with loom's thread count (loom pins OpenBLAS to one
  // thread and splits products itself; see runtime/parallel.h).
  openblas_set_num_threads(NumThreads());
  for (auto _ : state) {
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, static_cast<int>(m), static_cast<int>(n),
                static_cast<int>(k), 1.0f, a.data<float>(), static_cast<int>(k), w.data<float>(),
                static_cast<int>(k), 0.0f, out.data<float>(), static_cast<int>(n));
    benchmark::DoNotOptimize(out.raw_data());
  }
  openblas_set_num_threads(1);
  SetGemmCounters(state, m, k, n);
}
BENCHMARK(BM_CblasSgemm)->Apply(GemmArgs)->UseRealTime();

void BM_LoomMatmulBF16(benchmark::State& state) {
  const int64_t m = state.range(0), k = state.range(1), n = state.range(2);
  Tensor a = Tensor::Empty({m, k}, DType::kBF16, MemoryTag::kActivation);
  Tensor w = Tensor::Empty({n, k}, DType::kBF16, MemoryTag::kActivation);
  a.Fill(0.5f);
  w.Fill(0.25f);
  Tensor out = Tensor::Empty({m, n}, DType::kF32, MemoryTag::kActivation);
  for (auto _ : state) {
    Matmul(a, w, out, {.trans_b = true});
    benchmark::DoNotOptimize(out.raw_data());
  }
  SetGemmCounters(state, m, k, n);
}
BENCHMARK(BM_LoomMatmulBF16)->Args({2048, 384, 1152})->Args({2048, 768, 2304})->UseRealTime();

// Attention FLOPs: QKᵀ and P·V, causal (half of the T×T scores), 2 FLOPs per multiply-add.
double AttentionFlops(int64_t b, int64_t t, int64_t c) { return 2.0 * 2.0 * b * t * t * c / 2.0; }

// qkv and probs in `dtype`: f32, or bf16 as under autocast (bf16 products; the GEMM provider's
// native bf16 or widened to f32, as LOOM_BF16_GEMM and the CPU decide).
void BM_AttentionForward(benchmark::State& state, DType dtype) {
  const int64_t B = state.range(0), T = state.range(1), NH = state.range(2), HS = state.range(3);
  const Tensor qkv = Random({B, T, 3 * NH * HS}, 3, dtype);
  Tensor out = Tensor::Empty({B, T, NH * HS}, DType::kF32, MemoryTag::kActivation);
  Tensor probs = Tensor::Empty({B, NH, T, T}, dtype, MemoryTag::kActivation);
  for (auto _ : state) {
    AttentionForward(qkv, NH, out, probs);
    benchmark::DoNotOptimize(out.raw_data());
  }
  state.counters["FLOP/s"] = benchmark::Counter(AttentionFlops(B, T, NH * HS) * state.iterations(),
                                                benchmark::Counter::kIsRate);
  state.counters["bytes/s"] = benchmark::Counter(
      (static_cast<double>(qkv.nbytes()) + out.nbytes() + probs.nbytes()) * state.iterations(),
      benchmark::Counter::kIsRate);
}
BENCHMARK_CAPTURE(BM_AttentionForward, f32, DType::kF32)
    ->Args({8, 256, 6, 64})
    ->Args({4, 1024, 12, 64})
    ->UseRealTime();
BENCHMARK_CAPTURE(BM_AttentionForward, bf16, DType::kBF16)->Args({8, 256, 6, 64})->UseRealTime();

void BM_AttentionBackward(benchmark::State& state, DType dtype) {
  const int64_t B = state.range(0), T = state.range(1), NH = state.range(2), HS = state.range(3);
  const Tensor qkv = Random({B, T, 3 * NH * HS}, 3, dtype);
  Tensor dout = Random({B, T, NH * HS}, 4);
  Tensor out = Tensor::Empty({B, T, NH * HS}, DType::kF32, MemoryTag::kActivation);
  Tensor probs = Tensor::Empty({B, NH, T, T}, dtype, MemoryTag::kActivation);
  Tensor dqkv = Tensor::Zeros(qkv.shape(), DType::kF32, MemoryTag::kGrad);
  AttentionForward(qkv, NH, out, probs);
  for (auto _ : state) {
    AttentionBackward(dout, qkv, probs, NH, dqkv);
    benchmark::DoNotOptimize(dqkv.raw_data());
  }
  state.counters["FLOP/s"] = benchmark::Counter(
      2.0 * AttentionFlops(B, T, NH * HS) * state.iterations(), benchmark::Counter::kIsRate);
  state.counters["bytes/s"] =
      benchmark::Counter((2.0 * qkv.nbytes() + dout.nbytes() + probs.nbytes()) *
                             static_cast<double>(state.iterations()),
                         benchmark::Counter::kIsRate);
}
BENCHMARK_CAPTURE(BM_AttentionBackward, f32, DType::kF32)->Args({8, 256, 6, 64})->UseRealTime();
BENCHMARK_CAPTURE(BM_AttentionBackward, bf16, DType::kBF16)->Args({8, 256, 6, 64})->UseRealTime();

void BM_LayerNormForward(benchmark::State& state) {
  const int64_t n = state.range(0), c = state.range(1);
  Tensor x = Random({n, c}, 5), w = Random({c}, 6), b = Random({c}, 7);
  Tensor out = Tensor::Empty({n, c}, DType::kF32, MemoryTag::kActivation);
  Tensor mean = Tensor::Empty({n}, DType::kF32, MemoryTag::kActivation);
  Tensor rstd = Tensor::Empty({n}, DType::kF32, MemoryTag::kActivation);
  for (auto _ : state) {
    LayerNormForward(x, w, b, 1e-5f, out, mean, rstd);
    benchmark::DoNotOptimize(out.raw_data());
  }
  state.counters["FLOP/s"] =
      benchmark::Counter(8.0 * n * c * state.iterations(), benchmark::Counter::kIsRate);
  state.counters["bytes/s"] =
      benchmark::Counter(8.0 * n * c * state.iterations(), benchmark::Counter::kIsRate);
}
BENCHMARK(BM_LayerNormForward)->Args({2048, 384})->Args({2048, 768})->UseRealTime();

void BM_LayerNormBackward(benchmark::State& state) {
  const int64_t n = state.range(0), c = state.range(1);
  Tensor x = Random({n, c}, 5), w = Random({c}, 6), b = Random({c}, 7), dout = Random({n, c}, 8);
  Tensor out = Tensor::Empty({n, c}, DType::kF32, MemoryTag::kActivation);
  Tensor mean = Tensor::Empty({n}, DType::kF32, MemoryTag::kActivation);
  Tensor rstd = Tensor::Empty({n}, DType::kF32, MemoryTag::kActivation);
  Tensor dx = Tensor::Zeros({n, c}, DType::kF32, MemoryTag::kGrad);
  Tensor dw = Tensor::Zeros({c}, DType::kF32, MemoryTag::kGrad);
  Tensor db = Tensor::Zeros({c}, DType::kF32, MemoryTag::kGrad);
  LayerNormForward(x, w, b, 1e-5f, out, mean, rstd);
  for (auto _ : state) {
    LayerNormBackward(dout, x, w, mean, rstd, dx, dw, db);
    benchmark::DoNotOptimize(dx.raw_data());
  }
  state.counters["bytes/s"] =
      benchmark::Counter(4.0 * 4 * n * c * state.iterations(), benchmark::Counter::kIsRate);
}
BENCHMARK(BM_LayerNormBackward)->Args({2048, 384})->Args({2048, 768})->UseRealTime();

void BM_AdamW(benchmark::State& state) {
  const int64_t n = state.range(0);
  Tensor p = Random({n}, 9), g = Random({n}, 10);
  Tensor m = Tensor::Zeros({n}, DType::kF32, MemoryTag::kOptimizer);
  Tensor v = Tensor::Zeros({n}, DType::kF32, MemoryTag::kOptimizer);
  int64_t step = 0;
  for (auto _ : state) {
    AdamWUpdate(p, g, m, v, {.lr = 1e-4f, .weight_decay = 0.1f}, ++step);
    benchmark::DoNotOptimize(p.raw_data());
  }
  // Reads p, g, m, v and writes p, m, v: 7 f32 accesses per element; ~12 FLOPs per element.
  state.counters["FLOP/s"] =
      benchmark::Counter(12.0 * n * state.iterations(), benchmark::Counter::kIsRate);
  state.counters["bytes/s"] =
      benchmark::Counter(28.0 * n * state.iterations(), benchmark::Counter::kIsRate);
}
BENCHMARK(BM_AdamW)->Arg(1 << 20)->Arg(124 << 20 >> 3)->UseRealTime();

}  // namespace
}  // namespace loom::runtime::kernels

BENCHMARK_MAIN();
