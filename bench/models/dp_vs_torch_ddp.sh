#!/usr/bin/env bash
# Data-parallel training throughput side by side in one run: loom DP on 2 ranks (mpirun, loom's
# shared-memory collectives, DDP buckets reduced during backward) vs PyTorch DDP (gloo) on 2
# processes, same GPT preset (cpu-small), global batch, sequence length, threads per rank, f32
# and AdamW settings. The same run also measures
#   - scaling efficiency: loom's 2-rank tokens/s / (2 x loom's 1-rank tokens/s at the same
#     per-rank batch and threads);
#   - overlap: the fraction of gradient-reduction time hidden behind backward,
#     1 - exposed(reduce during backward) / exposed(reduce after backward), where exposed is the
#     time a step waits for reductions once backward is done (metrics: exposed_reduce_ms).
# Runs alternate round by round so drift affects all; each figure is the median over steps after
# the first two.
#
#   bash bench/models/dp_vs_torch_ddp.sh [--preset cpu-small] [--batch 8] [--steps 8]
#                                        [--threads 1] [--rounds 2] [--json out.json]
#
# --batch is the global batch (each of the 2 ranks gets half). Uses the current PyTorch release
# (bench/models/torch_venv.sh; LOOM_TORCH_PYTHON overrides).
set -euo pipefail
cd "$(dirname "$0")/../.."

preset=cpu-small batch=8 steps=8 threads=1 rounds=2 json=""
source bench/models/side_by_side.sh dp_vs_torch_ddp.sh "$@"
if [ $((batch % 2)) -ne 0 ]; then echo "dp_vs_torch_ddp.sh: --batch must be even" >&2; exit 2; fi
# --peak_gflops 1 skips train_gpt's start-up sgemm measurement: the MFU column in these logs is
# against 1 GFLOP/s and means nothing here (this script compares tokens/s).
loom=("$build/examples/train_gpt" --preset "$preset" --steps "$steps" --threads "$threads"
      --peak_gflops 1)

for r in $(seq 1 "$rounds"); do
  echo "[round $r/$rounds] loom, 1 rank, batch $((batch / 2))"
  "${loom[@]}" --batch $((batch / 2)) --metrics_out "$work/loom1_$r.jsonl" | grep '^step' | tail -n 1
  echo "[round $r/$rounds] loom, 2 ranks, batch $batch, reduce during backward"
  "${mpi[@]}" "${loom[@]}" --batch "$batch" --metrics_out "$work/loom2_$r.jsonl" \
    | grep '^step' | tail -n 1
  echo "[round $r/$rounds] loom, 2 ranks, batch $batch, reduce after backward"
  "${mpi[@]}" "${loom[@]}" --batch "$batch" --overlap_grad_reduce=false \
    --metrics_out "$work/loom2serial_$r.jsonl" | grep '^step' | tail -n 1
  echo "[round $r/$rounds] torch DDP (gloo), 2 processes, batch $batch"
  OMP_NUM_THREADS=$threads "$python" scripts/torch_reference/train_gpt_torch.py \
    --preset "$preset" --batch "$batch" --steps "$steps" --threads "$threads" --world_size 2 \
    --json "$work/torch2_$r.json" | tail -n 1
done

"$python" - "$work" "$rounds" "$preset" "$batch" "$threads" "$json" <<'PY'
import json, sys
sys.path.insert(0, "bench/models")
from side_by_side import loom_median, torch_median
work, rounds, preset, batch, threads, out = sys.argv[1:7]
def loom(name, key):
    return loom_median(f"{work}/{name}_{{r}}.jsonl", rounds, key)
ddp, version = torch_median(f"{work}/torch2_{{r}}.json", rounds)
one, two = loom("loom1", "tokens_per_s"), loom("loom2", "tokens_per_s")
exposed, serial = loom("loom2", "exposed_reduce_ms"), loom("loom2serial", "exposed_reduce_ms")
hidden = 1.0 - exposed / serial if serial > 0 else float("nan")
print(f"{preset}, global batch {batch}, {threads} thread(s) per rank, 2 ranks:")
print(f"  loom DP {two:.0f} tok/s vs torch {version} DDP (gloo) {ddp:.0f} tok/s: ratio {two / ddp:.2f}x")
print(f"  scaling efficiency: loom 2 ranks {two:.0f} / (2 x 1 rank {one:.0f}) = {two / (2 * one):.2f}")
print(f"  gradient reduction exposed after backward: {exposed:.2f} ms with overlap, "
      f"{serial:.2f} ms without: {100 * hidden:.0f}% hidden")
if out:
    json.dump({"preset": preset, "batch": int(batch), "threads": int(threads),
               "loom_dp2_tokens_per_s": two, "loom_1rank_tokens_per_s": one,
               "torch_ddp2_tokens_per_s": ddp, "torch_version": version, "ratio": two / ddp,
               "scaling_efficiency": two / (2 * one), "exposed_reduce_ms": exposed,
               "serial_reduce_ms": serial, "hidden_fraction": hidden}, open(out, "w"))
PY
