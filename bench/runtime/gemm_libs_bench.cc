// Which GEMM library is fastest on this CPU: OpenBLAS, BLIS and oneDNN (the candidates Debian
// packages), side by side at the GPT training shapes, f32 and bf16 (f32 accumulation), one and two
// threads. loom's matmul provider is chosen from these figures (docs/kernels.md, "GEMM provider").
//
//   build/bench/gemm_libs_bench --benchmark_enable_random_interleaving=true
//       --benchmark_repetitions=5 --benchmark_report_aggregates_only=true   (one line)
//   build/bench/gemm_libs_bench --benchmark_filter='f32/.*/threads:1'
//
// Every case is one product that loom's Linear layer runs for a token batch of M = 2048 (the
// cpu-small batch: 8 × 256): forward y = x·Wᵀ (NT), input gradient dx = dy·W (NN), weight
// gradient dW = dyᵀ·x (TN), at the (K, N) of cpu-small's qkv, attention projection, MLP up, MLP
// down and LM head. Each result is checked against a double-precision reference on sampled
// entries before it is timed; a library that gives a wrong answer is reported as an error.
//
// OpenBLAS and BLIS both export the CBLAS symbols, so each is loaded with dlopen(RTLD_DEEPBIND)
// and called through its own cblas_sgemm; a library that is not installed is skipped (its
// benchmarks report an error naming the file). oneDNN is linked. bf16 runs only where a library
// has a bf16 GEMM (oneDNN's matmul primitive); it is fast on CPUs with AMX and on AMD CPUs with
// AVX512_BF16 (the CPU and oneDNN's instruction set are printed in the context).
#include <benchmark/benchmark.h>
#include <dlfcn.h>
#include <omp.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <functional>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "oneapi/dnnl/dnnl.hpp"
#include "runtime/cpu_info.h"
#include "runtime/kernels/cpu/gemm.h"

namespace {

enum class Case { kForward, kInputGrad, kWeightGrad };
const char* CaseName(Case c) {
  switch (c) {
    case Case::kForward:
      return "fwd_NT";
    case Case::kInputGrad:
      return "dx_NN";
    case Case::kWeightGrad:
      return "dW_TN";
  }
  return "?";
}

// A row-major product C[m, n] = op(A)·op(B) as the libraries see it.
struct Product {
  bool ta, tb;
  int64_t m, n, k;
};

Product MakeProduct(Case c, int64_t tokens, int64_t k, int64_t n) {
  switch (c) {
    case Case::kForward:  // y[T, N] = x[T, K] · W[N, K]ᵀ
      return {false, true, tokens, n, k};
    case Case::kInputGrad:  // dx[T, K] = dy[T, N] · W[N, K]
      return {false, false, tokens, k, n};
    case Case::kWeightGrad:  // dW[N, K] = dy[T, N]ᵀ · x[T, K]
      return {true, false, n, k, tokens};
  }
  return {};
}

using CblasSgemm = void (*)(int, int, int, int, int, int, float, const float*, int, const float*,
                            int, float, float*, int);
constexpr int kRowMajor = 101, kNoTrans = 111, kTrans = 112;

// One dlopen'ed CBLAS library and its thread-count setter.
struct CblasLibrary {
  std::string file;
  std::string error;  // empty when loaded
  CblasSgemm sgemm = nullptr;
  void (*set_threads)(int) = nullptr;

  CblasLibrary(std::string so, const char* threads_symbol) : file(std::move(so)) {
    void* h = dlopen(file.c_str(), RTLD_NOW | RTLD_LOCAL | RTLD_DEEPBIND);
    if (h == nullptr) {
      error = std::string("cannot load ") + file + ": " + dlerror();
      return;
    }
    sgemm = reinterpret_cast<CblasSgemm>(dlsym(h, "cblas_sgemm"));
    set_threads = reinterpret_cast<void (*)(int)>(dlsym(h, threads_symbol));
    if (sgemm == nullptr || set_threads == nullptr) error = file + " lacks cblas_sgemm";
  }
};

CblasLibrary& OpenBlas() {
  static CblasLibrary lib("libopenblas.so.0", "openblas_set_num_threads");
  return lib;
}
CblasLibrary& Blis() {
  static CblasLibrary lib("libblis.so.4", "bli_thread_set_num_threads");
  return lib;
}

uint16_t ToBf16(float f) {  // round to nearest even
  uint32_t u;
  std::memcpy(&u, &f, 4);
  return static_cast<uint16_t>((u + 0x7FFF + ((u >> 16) & 1)) >> 16);
}
float FromBf16(uint16_t h) {
  const uint32_t u = static_cast<uint32_t>(h) << 16;
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

struct Operands {
  Product p;
  std::vector<float> a, b, c;
  std::vector<uint16_t> a16, b16;

  explicit Operands(const Product& prod) : p(prod) {
    std::mt19937 gen(7);
    std::normal_distribution<float> d(0.0f, 1.0f);
    a.resize(p.m * p.k);
    b.resize(p.k * p.n);
    c.assign(p.m * p.n, 0.0f);
    for (float& x : a) x = d(gen);
    for (float& x : b) x = d(gen);
    for (float x : a) a16.push_back(ToBf16(x));
    for (float x : b) b16.push_back(ToBf16(x));
  }
  float A(int64_t i, int64_t l, bool bf16) const {
    const int64_t idx = p.ta ? l * p.m + i : i * p.k + l;
    return bf16 ? FromBf16(a16[idx]) : a[idx];
  }
  float B(int64_t l, int64_t j, bool bf16) const {
    const int64_t idx = p.tb ? j * p.k + l : l * p.n + j;
    return bf16 ? FromBf16(b16[idx]) : b[idx];
  }
  // Sampled entries of c against a double reference; empty string when all agree.
  std::string Check(bool bf16) const {
    std::mt19937 gen(11);
    for (int s = 0; s < 64; ++s) {
      const int64_t i = gen() % p.m, j = gen() % p.n;
      double ref = 0.0, mag = 0.0;
      for (int64_t l = 0; l < p.k; ++l) {
        const double t = static_cast<double>(A(i, l, bf16)) * B(l, j, bf16);
        ref += t;
        mag += std::fabs(t);
      }
      if (std::fabs(c[i * p.n + j] - ref) > 1e-5 * mag + 1e-6) {
        return "wrong result at (" + std::to_string(i) + ", " + std::to_string(j) +
               "): " + std::to_string(c[i * p.n + j]) + " vs " + std::to_string(ref);
      }
    }
    return "";
  }
};

// oneDNN matmul primitive for op(A)·op(B) with the given source dtype and f32 output.
struct OneDnnMatmul {
  dnnl::engine engine{dnnl::engine::kind::cpu, 0};
  dnnl::stream stream{engine};
  dnnl::matmul prim;
  dnnl::memory ma, mb, mc;

  OneDnnMatmul(const Product& p, dnnl::memory::data_type dt, void* a, void* b, float* c) {
    using tag = dnnl::memory::format_tag;
    dnnl::memory::desc da({p.m, p.k}, dt, p.ta ? tag::ba : tag::ab);
    dnnl::memory::desc db({p.k, p.n}, dt, p.tb ? tag::ba : tag::ab);
    dnnl::memory::desc dc({p.m, p.n}, dnnl::memory::data_type::f32, tag::ab);
    prim = dnnl::matmul(dnnl::matmul::primitive_desc(dnnl::matmul::desc(da, db, dc), engine));
    ma = dnnl::memory(da, engine, a);
    mb = dnnl::memory(db, engine, b);
    mc = dnnl::memory(dc, engine, c);
  }
  void Run() {
    prim.execute(stream, {{DNNL_ARG_SRC, ma}, {DNNL_ARG_WEIGHTS, mb}, {DNNL_ARG_DST, mc}});
    stream.wait();
  }
};

void RunCase(benchmark::State& state, const std::string& lib, bool bf16, Product p, int threads) {
  Operands ops(p);
  std::function<void()> call;
  std::unique_ptr<OneDnnMatmul> matmul;
  const int lda = static_cast<int>(p.ta ? p.m : p.k), ldb = static_cast<int>(p.tb ? p.k : p.n);
  if (lib == "openblas" || lib == "blis") {
    CblasLibrary& l = lib == "openblas" ? OpenBlas() : Blis();
    if (!l.error.empty()) return state.SkipWithError(l.error.c_str());
    l.set_threads(threads);
    call = [&, lda, ldb] {
      l.sgemm(kRowMajor, p.ta ? kTrans : kNoTrans, p.tb ? kTrans : kNoTrans, p.m, p.n, p.k, 1.0f,
              ops.a.data(), lda, ops.b.data(), ldb, 0.0f, ops.c.data(), p.n);
    };
  } else if (lib == "onednn_sgemm") {
    omp_set_num_threads(threads);
    call = [&, lda, ldb] {
      dnnl_sgemm(p.ta ? 'T' : 'N', p.tb ? 'T' : 'N', p.m, p.n, p.k, 1.0f, ops.a.data(), lda,
                 ops.b.data(), ldb, 0.0f, ops.c.data(), p.n);
    };
  } else {  // onednn_matmul
    omp_set_num_threads(threads);
    void* a = bf16 ? static_cast<void*>(ops.a16.data()) : ops.a.data();
    void* b = bf16 ? static_cast<void*>(ops.b16.data()) : ops.b.data();
    matmul = std::make_unique<OneDnnMatmul>(
        p, bf16 ? dnnl::memory::data_type::bf16 : dnnl::memory::data_type::f32, a, b, ops.c.data());
    call = [&] { matmul->Run(); };
  }
  call();
  if (const std::string err = ops.Check(bf16); !err.empty())
    return state.SkipWithError(err.c_str());
  for (auto _ : state) {
    call();
    benchmark::DoNotOptimize(ops.c.data());
  }
  state.counters["GFLOP/s"] =
      benchmark::Counter(2e-9 * p.m * p.n * p.k * state.iterations(), benchmark::Counter::kIsRate);
}

}  // namespace

int main(int argc, char** argv) {
  benchmark::AddCustomContext("cpu_model", loom::runtime::HostCpu().Summary());
  // loom's provider, with the instruction set oneDNN dispatches to on this CPU.
  benchmark::AddCustomContext("loom_gemm",
                              std::string(loom::runtime::kernels::cpu::GemmProviderName()));
  const int64_t kTokens = 2048;
  const std::vector<std::pair<int64_t, int64_t>> shapes = {
      {384, 1152}, {384, 384}, {384, 1536}, {1536, 384}, {384, 4096}};
  for (bool bf16 : {false, true}) {
    const std::vector<std::string> libs =
        bf16 ? std::vector<std::string>{"onednn_matmul"}
             : std::vector<std::string>{"openblas", "blis", "onednn_sgemm", "onednn_matmul"};
    for (const std::string& lib : libs) {
      for (int threads : {1, 2}) {
        for (Case c : {Case::kForward, Case::kInputGrad, Case::kWeightGrad}) {
          for (auto [k, n] : shapes) {
            const Product p = MakeProduct(c, kTokens, k, n);
            const std::string name = std::string(bf16 ? "bf16/" : "f32/") + lib + "/" +
                                     CaseName(c) + "/K" + std::to_string(k) + "_N" +
                                     std::to_string(n) + "/threads:" + std::to_string(threads);
            benchmark::RegisterBenchmark(
                name.c_str(), [=](benchmark::State& s) { RunCase(s, lib, bf16, p, threads); })
                ->UseRealTime()
                ->MinTime(0.3);
          }
        }
      }
    }
  }
  benchmark::Initialize(&argc, argv);
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
