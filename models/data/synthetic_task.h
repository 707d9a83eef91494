// The embedded default dataset: a synthetic, learnable sorting task generated from a seed, so
// training and its tests need no download, with a known best possible loss.
//
//   LOOM_ASSIGN_OR_RETURN(TokenDataset train, MakeSyntheticDataset(/*seed=*/1337, 1 << 20));
//   LOOM_ASSIGN_OR_RETURN(TokenDataset val, MakeSyntheticDataset(/*seed=*/7, 1 << 16));
//   // model vocab: train.vocab_size() == kSyntheticVocabSize (16); use T a multiple of 16.
//   // untrained loss ~ ln 16 = 2.77; a working model goes below kSyntheticLossThreshold (1.257);
//   // no model can go below kSyntheticLossFloor (1.007).
//
// The task. Example k of the stream with seed s is the 2K + 2 tokens
//     d_1 .. d_K  SEP  e_1 .. e_K  END
// where d_i are i.i.d. uniform digits 0..V-1 (token ids 0..V-1), e is d sorted ascending,
// SEP = V and END = V + 1. The default is K = 7, V = 10: 16 tokens per example, SEP = 10,
// END = 11, vocabulary 16 (ids 12..15 never occur). Examples are concatenated into one stream,
// cut after num_tokens tokens. Digit i of example k is drawn from loom's counter-based RNG
// (runtime/rng.h) at counter (k·K + i, Fnv1a64("synthetic_sort")) with key s, so example k is a
// pure function of (s, k): any part of the stream is generated independently of the rest.
// (A digit is floor(w·V / 2^32) of the 32-bit word w; its bias is below V / 2^32.)
//
// Loss floor. The best next-token predictor that sees the current example from its start predicts
// each d_i uniformly (ln V nats: the digits are independent of everything before them), and is
// certain of SEP, of every e_i (the multiset of d fixes the sorted output) and of END. Over the
// 2K + 2 targets of one example period that sums to K ln V nats, so per predicted token
//     floor = K ln V / (2K + 2)          default: 7 ln 10 / 16 = 1.00738 nats/token.
// The floor is exact for every batch row (not only on average) when rows start at example
// boundaries: T a multiple of example_length() (16 by default: any power of two >= 16), because
// BatchSampler and EvalBatch start rows at multiples of T from position 0. For other T a row's
// first example is cut, the predictor misses its start, and the best row loss is a little higher.
//
// Reference points for the default task, nats per token:
//     2.773  untrained model (uniform over 16 ids, ln 16)
//     2.015  knows where SEP and END go, predicts every digit uniformly (14 ln 10 / 16)
//     1.567  also knows the output is a sorted multiset but ignores the input digits
//            ((7 ln 10 + 8.954) / 16; 8.954 nats is the entropy of the multiset of 7 digits)
//     1.257  kSyntheticLossThreshold = floor + 0.25
//     1.007  kSyntheticLossFloor
// Going below the threshold requires reading the input to sort it: it allows 4 nats of excess per
// example, about 0.57 nats per sorted digit. Measured with an equivalent PyTorch GPT (2 layers,
// d=64, 4 heads, AdamW with 100 warm-up steps and cosine decay): with B=8, T=64, lr 1e-3 over 600
// steps the validation loss leaves the ~1.6 plateau (where a model ignores the input) around step
// 200 and crosses the threshold at step ~350; lr 3e-4 is still on the plateau at step 600; B=32
// over 3000 steps with lr 3e-3 reaches 1.0074, the floor. T=40 (rows not aligned to examples)
// learns markedly slower.
#pragma once

#include <cstdint>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "models/data/token_dataset.h"

namespace loom::models::data {

// Shape of a sorting task. The defaults are the embedded task; other shapes exist for tests (the
// floor is checked by enumerating every example of small shapes) and for harder or easier runs.
struct SortTask {
  int num_digits = 7;   // K: digits per example
  int num_values = 10;  // V: digits are token ids 0..V-1
  int vocab_size = 16;  // >= V + 2; the ids above END never occur

  int32_t separator() const { return num_values; }
  int32_t end_of_example() const { return num_values + 1; }
  int64_t example_length() const { return 2 * static_cast<int64_t>(num_digits) + 2; }
  // K ln V / (2K + 2): the best mean cross-entropy per predicted token (nats), see above.
  double LossFloor() const;
  // InvalidArgument naming the field unless 1 <= K <= 65536, 1 <= V <= 65536, vocab_size >= V + 2.
  absl::Status Validate() const;
};

inline constexpr int kSyntheticVocabSize = 16;
inline constexpr int64_t kSyntheticExampleLength = 16;
// 7 ln 10 / 16, the default task's floor (equal to SortTask().LossFloor()).
inline constexpr double kSyntheticLossFloor = 7 * 2.302585092994045684 / 16;
// The mean loss a working tiny model reaches on the default task; see the table above.
inline constexpr double kSyntheticLossThreshold = kSyntheticLossFloor + 0.25;

// Example k >= 0 of stream `seed`: the example_length() tokens at stream positions
// [k·L, (k+1)·L). `task` must be valid (LOOM_CHECK).
std::vector<int32_t> SortExample(const SortTask& task, uint64_t seed, int64_t k);

// The first `num_tokens` tokens of stream `seed` (4 bytes each, host memory), with
// vocab_size() == task.vocab_size and name() "synthetic sort task (seed <seed>)".
// InvalidArgument if num_tokens < 1 or the task is invalid.
absl::StatusOr<TokenDataset> MakeSyntheticDataset(uint64_t seed, int64_t num_tokens,
                                                  const SortTask& task = SortTask());

}  // namespace loom::models::data
