#include <algorithm>
#include <cmath>
#include <cstring>
#include <numeric>
#include <vector>

#include "runtime/kernels/cpu/cpu_kernels.h"
#include "runtime/kernels/cpu/rows.h"
#include "runtime/parallel.h"

namespace loom::runtime::kernels::cpu {

void RouterScores(const Tensor& logits, RouterScore kind, Tensor& scores) {
  const auto [n, e] = AsRows(logits);
  const float* pl = logits.data<float>();
  float* ps = scores.data<float>();
  ParallelFor(n, RowGrain(e), [&](int64_t begin, int64_t end) {
    for (int64_t t = begin; t < end; ++t) {
      const float* l = pl + t * e;
      float* s = ps + t * e;
      if (kind == RouterScore::kSigmoid) {
        for (int64_t j = 0; j < e; ++j) s[j] = 1.0f / (1.0f + std::exp(-l[j]));
        continue;
      }
      const float mx = *std::max_element(l, l + e);
      float sum = 0.0f;
      for (int64_t j = 0; j < e; ++j) sum += (s[j] = std::exp(l[j] - mx));
      for (int64_t j = 0; j < e; ++j) s[j] /= sum;
    }
  });
}

void RouterScoresBackward(const Tensor& dscores, const Tensor& scores, RouterScore kind,
                          Tensor& dlogits) {
  const auto [n, e] = AsRows(scores);
  const float* pd = dscores.data<float>();
  const float* ps = scores.data<float>();
  float* po = dlogits.data<float>();
  ParallelFor(n, RowGrain(e), [&](int64_t begin, int64_t end) {
    for (int64_t t = begin; t < end; ++t) {
      const float* d = pd + t * e;
      const float* s = ps + t * e;
      float* o = po + t * e;
      if (kind == RouterScore::kSigmoid) {
        for (int64_t j = 0; j < e; ++j) o[j] = d[j] * s[j] * (1.0f - s[j]);
        continue;
      }
      float dot = 0.0f;
      for (int64_t j = 0; j < e; ++j) dot += d[j] * s[j];
      for (int64_t j = 0; j < e; ++j) o[j] = s[j] * (d[j] - dot);
    }
  });
}

namespace {

// Indices of the `k` largest of v[0..n) (among those with allowed[i]), largest first, ties to
// the lower index.
void TopIndices(const float* v, int64_t n, int64_t k, const std::vector<char>* allowed,
                std::vector<int>& out) {
  out.clear();
  for (int i = 0; i < n; ++i) {
    if (allowed == nullptr || (*allowed)[i]) out.push_back(i);
  }
  const auto better = [v](int a, int b) { return v[a] > v[b] || (v[a] == v[b] && a < b); };
  std::partial_sort(out.begin(), out.begin() + k, out.end(), better);
  out.resize(k);
}

}  // namespace

void TopKGate(const Tensor& scores, const float* bias, const TopKOptions& o, Tensor& experts,
              Tensor& gates) {
  const auto [n, e] = AsRows(scores);
  const int64_t k = o.k, per_group = e / o.groups;
  const float* ps = scores.data<float>();
  int32_t* pe = experts.data<int32_t>();
  float* pg = gates.data<float>();
  ParallelFor(n, 16, [&](int64_t begin, int64_t end) {
    std::vector<float> choice(e), group_score(o.groups);
    std::vector<char> allowed(e);
    std::vector<int> best, groups;
    for (int64_t t = begin; t < end; ++t) {
      const float* s = ps + t * e;
      for (int64_t j = 0; j < e; ++j) choice[j] = s[j] + (bias != nullptr ? bias[j] : 0.0f);
      const std::vector<char>* mask = nullptr;
      if (o.top_groups < o.groups) {
        for (int64_t g = 0; g < o.groups; ++g) {
          TopIndices(choice.data() + g * per_group, per_group, std::min<int64_t>(2, per_group),
                     nullptr, best);
          group_score[g] = 0.0f;
          for (int i : best) group_score[g] += choice[g * per_group + i];
        }
        TopIndices(group_score.data(), o.groups, o.top_groups, nullptr, groups);
        std::fill(allowed.begin(), allowed.end(), 0);
        for (int g : groups) std::fill_n(allowed.begin() + g * per_group, per_group, 1);
        mask = &allowed;
      }
      TopIndices(choice.data(), e, k, mask, best);
      float sum = 0.0f;
      for (int64_t i = 0; i < k; ++i) sum += s[best[i]];
      const float factor = o.normalize ? o.scale / sum : o.scale;
      for (int64_t i = 0; i < k; ++i) {
        pe[t * k + i] = best[i];
        pg[t * k + i] = s[best[i]] * factor;
      }
    }
  });
}

void TopKGateBackward(const Tensor& scores, const Tensor& experts, const Tensor& dgates,
                      const TopKOptions& o, Tensor& dscores) {
  const auto [n, e] = AsRows(scores);
  const int64_t k = o.k;
  const float* ps = scores.data<float>();
  const int32_t* pe = experts.data<int32_t>();
  const float* pdg = dgates.data<float>();
  float* pds = dscores.data<float>();
  ParallelFor(n, RowGrain(e), [&](int64_t begin, int64_t end) {
    for (int64_t t = begin; t < end; ++t) {
      const float* s = ps + t * e;
      const int32_t* ex = pe + t * k;
      const float* dg = pdg + t * k;
      float* ds = pds + t * e;
      std::fill_n(ds, e, 0.0f);
      if (!o.normalize) {
        for (int64_t i = 0; i < k; ++i) ds[ex[i]] = o.scale * dg[i];
        continue;
      }
      // g_i = scale · s_i / S, S = Σ_k s_k: ∂/∂s_j = scale · (dg_j − Σ_i dg_i · s_i / S) / S.
      float sum = 0.0f, weighted = 0.0f;
      for (int64_t i = 0; i < k; ++i) sum += s[ex[i]];
      for (int64_t i = 0; i < k; ++i) weighted += dg[i] * s[ex[i]];
      for (int64_t i = 0; i < k; ++i) ds[ex[i]] = o.scale * (dg[i] - weighted / sum) / sum;
    }
  });
}

void PlanRouting(const Tensor& experts, int64_t num_experts, int64_t capacity, Tensor& row_of,
                 std::vector<int64_t>& counts, std::vector<int64_t>& load, int64_t& dropped) {
  const int64_t slots = experts.numel();
  const int32_t* pe = experts.data<int32_t>();
  int32_t* pr = row_of.data<int32_t>();
  load.assign(num_experts, 0);
  counts.assign(num_experts, 0);
  // First pass: each slot's rank among its expert's slots (token order) and the loads.
  for (int64_t i = 0; i < slots; ++i) pr[i] = pe[i] < 0 ? -1 : static_cast<int32_t>(load[pe[i]]++);
  dropped = 0;
  for (int64_t j = 0; j < num_experts; ++j) {
    counts[j] = capacity > 0 ? std::min(load[j], capacity) : load[j];
    dropped += load[j] - counts[j];
  }
  std::vector<int64_t> start(num_experts, 0);
  std::exclusive_scan(counts.begin(), counts.end(), start.begin(), int64_t{0});
  for (int64_t i = 0; i < slots; ++i) {
    if (pe[i] < 0) continue;  // not routed here
    pr[i] = pr[i] < counts[pe[i]] ? static_cast<int32_t>(start[pe[i]] + pr[i]) : -1;
  }
}

void MoePermute(const Tensor& x, const Tensor& row_of, Tensor& out) {
  const int64_t c = x.dim(-1), n = x.numel() / c, k = row_of.dim(1);
  const float* px = x.data<float>();
  const int32_t* pr = row_of.data<int32_t>();
  float* po = out.data<float>();
  ParallelFor(n, RowGrain(c * k), [&](int64_t begin, int64_t end) {
    for (int64_t t = begin; t < end; ++t) {
      for (int64_t i = 0; i < k; ++i) {
        const int32_t r = pr[t * k + i];
        if (r >= 0) std::memcpy(po + r * c, px + t * c, c * sizeof(float));
      }
    }
  });
}

void MoeCombine(const Tensor& y, const Tensor& row_of, const float* gates, Tensor& out) {
  const int64_t c = out.dim(-1), n = out.numel() / c, k = row_of.dim(1);
  const float* py = y.data<float>();
  const int32_t* pr = row_of.data<int32_t>();
  float* po = out.data<float>();
  ParallelFor(n, RowGrain(c * k), [&](int64_t begin, int64_t end) {
    for (int64_t t = begin; t < end; ++t) {
      float* o = po + t * c;
      std::fill_n(o, c, 0.0f);
      for (int64_t i = 0; i < k; ++i) {
        const int32_t r = pr[t * k + i];
        if (r < 0) continue;
        const float g = gates != nullptr ? gates[t * k + i] : 1.0f;
        const float* yr = py + r * c;
        for (int64_t j = 0; j < c; ++j) o[j] += g * yr[j];
      }
    }
  });
}

void MoeCombineBackward(const Tensor& dout, const Tensor& y, const Tensor& row_of,
                        const Tensor& gates, Tensor& dy, Tensor& dgates) {
  const int64_t c = dout.dim(-1), n = dout.numel() / c, k = row_of.dim(1);
  const float* pd = dout.data<float>();
  const float* py = y.data<float>();
  const int32_t* pr = row_of.data<int32_t>();
  const float* pg = gates.data<float>();
  float* pdy = dy.data<float>();
  float* pdg = dgates.data<float>();
  ParallelFor(n, RowGrain(c * k), [&](int64_t begin, int64_t end) {
    for (int64_t t = begin; t < end; ++t) {
      const float* d = pd + t * c;
      for (int64_t i = 0; i < k; ++i) {
        const int32_t r = pr[t * k + i];
        if (r < 0) {
          pdg[t * k + i] = 0.0f;
          continue;
        }
        const float g = pg[t * k + i];
        const float* yr = py + r * c;
        float* dyr = pdy + r * c;
        float dot = 0.0f;
        for (int64_t j = 0; j < c; ++j) {
          dyr[j] = g * d[j];
          dot += d[j] * yr[j];
        }
        pdg[t * k + i] = dot;
      }
    }
  });
}

void QuantizeRowsFp8(const Tensor& x, Tensor& packed) {
  const int64_t rows = x.dim(0), c = x.dim(1), width = packed.dim(1);
  const int64_t blocks = (c + kFp8Block - 1) / kFp8Block;
  const float* px = x.data<float>();
  uint8_t* pp = static_cast<uint8_t*>(packed.raw_data());
  ParallelFor(rows, RowGrain(c), [&](int64_t begin, int64_t end) {
    std::vector<float> scaled(kFp8Block);
    for (int64_t r = begin; r < end; ++r) {
      const float* xr = px + r * c;
      uint8_t* out = pp + r * width;
      for (int64_t b = 0; b < blocks; ++b) {
        const int64_t lo = b * kFp8Block, len = std::min(kFp8Block, c - lo);
        float amax = 0.0f;
        for (int64_t j = 0; j < len; ++j) amax = std::max(amax, std::fabs(xr[lo + j]));
        const float scale = Fp8Scale(amax);
        for (int64_t j = 0; j < len; ++j) scaled[j] = xr[lo + j] / scale;
        ConvertBuffer(scaled.data(), DType::kF32, out + lo, DType::kF8E4M3, len);
        std::memcpy(out + (c + 3) / 4 * 4 + 4 * b, &scale, sizeof(scale));
      }
    }
  });
}

void DequantizeRowsFp8(const Tensor& packed, Tensor& x) {
  const int64_t rows = x.dim(0), c = x.dim(1), width = packed.dim(1);
  const int64_t blocks = (c + kFp8Block - 1) / kFp8Block;
  const uint8_t* pp = static_cast<const uint8_t*>(packed.raw_data());
  float* px = x.data<float>();
  ParallelFor(rows, RowGrain(c), [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) {
      const uint8_t* in = pp + r * width;
      float* xr = px + r * c;
      ConvertBuffer(in, DType::kF8E4M3, xr, DType::kF32, c);
      for (int64_t b = 0; b < blocks; ++b) {
        float scale;
        std::memcpy(&scale, in + (c + 3) / 4 * 4 + 4 * b, sizeof(scale));
        const int64_t lo = b * kFp8Block, len = std::min(kFp8Block, c - lo);
        for (int64_t j = 0; j < len; ++j) xr[lo + j] *= scale;
      }
    }
  });
}

}  // namespace loom::runtime::kernels::cpu
