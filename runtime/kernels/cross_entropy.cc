#include "runtime/kernels/cross_entropy.h"

#include "runtime/kernels/arg_check.h"
#include "runtime/kernels/cpu/cpu_kernels.h"
#include "runtime/kernels/cuda_twins.h"
#include "runtime/kernels/elementwise.h"

namespace loom::runtime::kernels {
namespace {

// logits [N, V] (leading dims folded) and i32 targets [N]; returns N.
int64_t CheckLogits(const ArgCheck& check, const Tensor& logits, const Tensor& targets) {
  check.ExpectDType(logits, DType::kF32);
  check.Expect(logits.rank() >= 2, "logits must be [N, V] or [B, T, V]");
  const int64_t v = logits.dim(-1);
  const int64_t n = v == 0 ? 0 : logits.numel() / v;
  check.ExpectDType(targets, DType::kI32);
  check.Expect(targets.numel() == n, "targets must have one entry per logits row");
  return n;
}

void CheckRowStats(const ArgCheck& check, int64_t n, std::initializer_list<const Tensor*> rows) {
  for (const Tensor* t : rows) {
    check.ExpectDType(*t, DType::kF32);
    check.ExpectShape(*t, {n});
  }
}

}  // namespace

void CrossEntropyStats(const Tensor& logits, const Tensor& targets, int64_t vocab_start,
                       Tensor& row_max, Tensor& sum_exp, Tensor& target_logit) {
  ArgCheck check("CrossEntropyStats", {{"logits", &logits},
                                       {"targets", &targets},
                                       {"row_max", &row_max},
                                       {"sum_exp", &sum_exp},
                                       {"target_logit", &target_logit}});
  const int64_t n = CheckLogits(check, logits, targets);
  check.Expect(vocab_start >= 0, "vocab_start must be >= 0");
  CheckRowStats(check, n, {&row_max, &sum_exp, &target_logit});
  if (check.OnCuda()) {
    return check.Twin(CudaTwins().cross_entropy_stats)(logits, targets, vocab_start, row_max,
                                                       sum_exp, target_logit);
  }
  cpu::CrossEntropyStats(logits, targets, vocab_start, row_max, sum_exp, target_logit);
}

void CrossEntropyRescaleSumExp(const Tensor& local_max, const Tensor& global_max, Tensor& sum_exp) {
  ArgCheck check("CrossEntropyRescaleSumExp",
                 {{"local_max", &local_max}, {"global_max", &global_max}, {"sum_exp", &sum_exp}});
  check.ExpectRank(sum_exp, 1);
  CheckRowStats(check, sum_exp.dim(0), {&local_max, &global_max, &sum_exp});
  if (check.OnCuda()) {
    return check.Twin(CudaTwins().cross_entropy_rescale)(local_max, global_max, sum_exp);
  }
  cpu::CrossEntropyRescaleSumExp(local_max, global_max, sum_exp);
}

void CrossEntropyLoss(const Tensor& row_max, const Tensor& sum_exp, const Tensor& target_logit,
                      Tensor& losses) {
  ArgCheck check("CrossEntropyLoss", {{"row_max", &row_max},
                                      {"sum_exp", &sum_exp},
                                      {"target_logit", &target_logit},
                                      {"losses", &losses}});
  check.ExpectRank(losses, 1);
  CheckRowStats(check, losses.dim(0), {&row_max, &sum_exp, &target_logit, &losses});
  if (check.OnCuda()) {
    return check.Twin(CudaTwins().cross_entropy_loss)(row_max, sum_exp, target_logit, losses);
  }
  cpu::CrossEntropyLoss(row_max, sum_exp, target_logit, losses);
}

void CrossEntropyBackward(const Tensor& logits, const Tensor& targets, int64_t vocab_start,
                          const Tensor& row_max, const Tensor& sum_exp, const Tensor& dloss,
                          Tensor& dlogits) {
  ArgCheck check("CrossEntropyBackward", {{"logits", &logits},
                                          {"targets", &targets},
                                          {"row_max", &row_max},
                                          {"sum_exp", &sum_exp},
                                          {"dloss", &dloss},
                                          {"dlogits", &dlogits}});
  const int64_t n = CheckLogits(check, logits, targets);
  check.ExpectDType(dlogits, DType::kF32);
  check.ExpectShape(dlogits, logits.shape());
  CheckRowStats(check, n, {&row_max, &sum_exp, &dloss});
  if (check.OnCuda()) {
    return check.Twin(CudaTwins().cross_entropy_backward)(logits, targets, vocab_start, row_max,
                                                          sum_exp, dloss, dlogits);
  }
  cpu::CrossEntropyBackward(logits, targets, vocab_start, row_max, sum_exp, dloss, dlogits);
}

void CrossEntropyForwardBackward(const Tensor& logits, const Tensor& targets, const Tensor& dloss,
                                 Tensor& losses, Tensor& dlogits) {
  {
    ArgCheck check("CrossEntropyForwardBackward", {{"logits", &logits}, {"targets", &targets}});
    CheckLogits(check, logits, targets);
  }
  // On a device reported by CheckDeviceErrors.
  CheckIndices(targets, logits.dim(-1), "CrossEntropyForwardBackward: targets");
  const int64_t n = targets.numel();
  Allocator* where = logits.storage()->allocator();  // the workspace beside the logits
  Tensor row_max = Tensor::Empty({n}, DType::kF32, MemoryTag::kWorkspace, where);
  Tensor sum_exp = Tensor::Empty({n}, DType::kF32, MemoryTag::kWorkspace, where);
  Tensor target_logit = Tensor::Empty({n}, DType::kF32, MemoryTag::kWorkspace, where);
  CrossEntropyStats(logits, targets, 0, row_max, sum_exp, target_logit);
  CrossEntropyLoss(row_max, sum_exp, target_logit, losses);
  CrossEntropyBackward(logits, targets, 0, row_max, sum_exp, dloss, dlogits);
}

}  // namespace loom::runtime::kernels
