// The CPU kernel backend: the implementations behind runtime/kernels/*.h, called after the public
// entry point has validated dtypes, shapes and devices. Same arguments and meaning as the public
// functions (see those headers); nothing here checks its inputs again.
#pragma once

#include <cstdint>
#include <vector>

#include "runtime/kernels/adamw.h"
#include "runtime/kernels/fp8.h"
#include "runtime/kernels/matmul.h"
#include "runtime/kernels/moe.h"
#include "runtime/tensor.h"

namespace loom::runtime::kernels::cpu {

void Matmul(const Tensor& a, const Tensor& b, Tensor& out, int64_t m, int64_t n, int64_t k,
            const MatmulOptions& options);

void BiasAdd(Tensor& x, const Tensor& bias);
void BiasBackward(const Tensor& dout, Tensor& dbias);

void LayerNormForward(const Tensor& x, const Tensor& w, const Tensor& b, float eps, Tensor& out,
                      Tensor& mean, Tensor& rstd);
void LayerNormBackward(const Tensor& dout, const Tensor& x, const Tensor& w, const Tensor& mean,
                       const Tensor& rstd, Tensor& dx, Tensor& dw, Tensor& db);
void RMSNormForward(const Tensor& x, const Tensor& w, float eps, Tensor& out, Tensor& rstd);
void RMSNormBackward(const Tensor& dout, const Tensor& x, const Tensor& w, const Tensor& rstd,
                     Tensor& dx, Tensor& dw);

void GeluForward(const Tensor& x, Tensor& out);
void BiasGeluForward(Tensor& x, const Tensor& bias, Tensor& out);
void GeluBackward(const Tensor& dout, const Tensor& x, Tensor& dx, bool accumulate);
void SwiGLUForward(const Tensor& gate, const Tensor& up, Tensor& out);
void SwiGLUBackward(const Tensor& dout, const Tensor& gate, const Tensor& up, Tensor& dgate,
                    Tensor& dup);

void AttentionForward(const Tensor& qkv, int64_t num_heads, Tensor& out, Tensor& probs);
void AttentionBackward(const Tensor& dout, const Tensor& qkv, const Tensor& probs,
                       int64_t num_heads, Tensor& dqkv);
void FlashAttentionForward(const Tensor& qkv, int64_t num_heads, Tensor& out, Tensor& lse);
void FlashAttentionBackward(const Tensor& dout, const Tensor& qkv, const Tensor& out,
                            const Tensor& lse, int64_t num_heads, Tensor& dqkv);

void CrossEntropyStats(const Tensor& logits, const Tensor& targets, int64_t vocab_start,
                       Tensor& row_max, Tensor& sum_exp, Tensor& target_logit);
void CrossEntropyRescaleSumExp(const Tensor& local_max, const Tensor& global_max, Tensor& sum_exp);
void CrossEntropyLoss(const Tensor& row_max, const Tensor& sum_exp, const Tensor& target_logit,
                      Tensor& losses);
void CrossEntropyBackward(const Tensor& logits, const Tensor& targets, int64_t vocab_start,
                          const Tensor& row_max, const Tensor& sum_exp, const Tensor& dloss,
                          Tensor& dlogits);

// The table holds rows [vocab_start, vocab_start + rows); other ids give zero rows / are skipped.
void EmbeddingForward(const Tensor& ids, const Tensor& table, int64_t vocab_start, Tensor& out);
void EmbeddingBackward(const Tensor& dout, const Tensor& ids, int64_t vocab_start, Tensor& dtable);

void RouterScores(const Tensor& logits, RouterScore kind, Tensor& scores);
void RouterScoresBackward(const Tensor& dscores, const Tensor& scores, RouterScore kind,
                          Tensor& dlogits);
// bias: [E] or nullptr.
void TopKGate(const Tensor& scores, const float* bias, const TopKOptions& options, Tensor& experts,
              Tensor& gates);
void TopKGateBackward(const Tensor& scores, const Tensor& experts, const Tensor& dgates,
                      const TopKOptions& options, Tensor& dscores);
void PlanRouting(const Tensor& experts, int64_t num_experts, int64_t capacity, Tensor& row_of,
                 std::vector<int64_t>& counts, std::vector<int64_t>& load, int64_t& dropped);
void MoePermute(const Tensor& x, const Tensor& row_of, Tensor& out);
void QuantizeRowsFp8(const Tensor& x, Tensor& packed);
void QuantizeFp8(const Tensor& x, Fp8Blocks blocks, Tensor& q, Tensor& scales);
void Fp8Matmul(const Tensor& a, const Tensor& scale_a, Fp8Blocks a_blocks, const Tensor& b,
               const Tensor& scale_b, Fp8Blocks b_blocks, Tensor& out);
void DequantizeRowsFp8(const Tensor& packed, Tensor& x);
// gates: [N, K] or nullptr (weights 1).
void MoeCombine(const Tensor& y, const Tensor& row_of, const float* gates, Tensor& out);
void MoeCombineBackward(const Tensor& dout, const Tensor& y, const Tensor& row_of,
                        const Tensor& gates, Tensor& dy, Tensor& dgates);

void Add(const Tensor& a, const Tensor& b, Tensor& out);
void Scale(Tensor& x, float factor);
double SumOfSquares(const Tensor& x);

void AdamWUpdate(Tensor& master, const Tensor& grad, Tensor& m, Tensor& v,
                 const AdamWConfig& config, int64_t step, Tensor* copy_out);
void SgdUpdate(Tensor& param, const Tensor& grad, Tensor& buffer, const SgdStep& step);

}  // namespace loom::runtime::kernels::cpu
