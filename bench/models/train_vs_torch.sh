#!/usr/bin/env bash
# Single-rank training throughput, loom vs PyTorch, side by side in one run: the same GPT preset
# (cpu-small by default), f32, the same batch, sequence length and thread count, AdamW with the
# same settings. Runs alternate (loom, torch, loom, torch, ...) so drift affects both; each
# reports the median tokens/s over its steps after the first two (warm-up).
#
#   bash bench/models/train_vs_torch.sh [--preset cpu-small] [--batch 8] [--steps 8]
#                                       [--threads 2] [--rounds 2] [--json out.json]
#
# Uses the current PyTorch release (bench/models/torch_venv.sh; LOOM_TORCH_PYTHON overrides).
set -euo pipefail
cd "$(dirname "$0")/../.."

preset=cpu-small batch=8 steps=8 threads=2 rounds=2 json=""
source bench/models/side_by_side.sh train_vs_torch.sh "$@"

for r in $(seq 1 "$rounds"); do
  echo "[round $r/$rounds] loom"
  LOOM_NUM_THREADS=$threads "$build/examples/train_gpt" --preset "$preset" --batch "$batch" \
    --steps "$steps" --threads "$threads" --metrics_out "$work/loom_$r.jsonl" \
    | grep '^step' | tail -n 2
  echo "[round $r/$rounds] torch"
  OMP_NUM_THREADS=$threads "$python" scripts/torch_reference/train_gpt_torch.py --preset "$preset" \
    --batch "$batch" --steps "$steps" --threads "$threads" --json "$work/torch_$r.json" | tail -n 2
done

"$python" - "$work" "$rounds" "$preset" "$batch" "$threads" "$json" <<'PY'
import json, sys
sys.path.insert(0, "bench/models")
from side_by_side import loom_median, torch_median
work, rounds, preset, batch, threads, out = sys.argv[1:7]
lm = loom_median(f"{work}/loom_{{r}}.jsonl", rounds, "tokens_per_s")
tm, version = torch_median(f"{work}/torch_{{r}}.json", rounds)
print(f"{preset}, batch {batch}, {threads} threads: loom {lm:.0f} tok/s, "
      f"torch {version} {tm:.0f} tok/s, ratio {lm / tm:.2f}x")
if out:
    json.dump({"preset": preset, "batch": int(batch), "threads": int(threads),
               "loom_tokens_per_s": lm, "torch_tokens_per_s": tm, "torch_version": version,
               "ratio": lm / tm}, open(out, "w"))
PY
