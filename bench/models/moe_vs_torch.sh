#!/usr/bin/env bash
# Mixture-of-experts training throughput side by side in one run: loom at ep 2 (mpirun, loom's
# shared-memory AllToAllV), with the exchange overlapped with expert compute, without, and with
# the dual micro-batch overlap (--moe_dual_batch), vs a
# PyTorch MoE of the same shape at ep 2 (scripts/torch_reference/train_moe_torch.py: the experts
# split over 2 gloo processes, tokens exchanged with all_to_all_single), with the same preset,
# global batch, sequence length, random tokens, threads per rank, f32 and AdamW settings; loom's
# single rank for reference. Runs alternate round by round; each figure is the median over the steps after the
# first two. Also reports loom's exposed all-to-all time (exposed_a2a_ms) for each variant.
# The CPU model is printed with the figures.
#
#   bash bench/models/moe_vs_torch.sh [--preset moe-small] [--batch 8] [--steps 8] [--threads 1]
#                                     [--rounds 2] [--json out.json]
#
# Uses the current PyTorch release (bench/models/torch_venv.sh; LOOM_TORCH_PYTHON overrides).
set -euo pipefail
cd "$(dirname "$0")/../.."

preset=moe-small batch=8 steps=8 threads=1 rounds=2 json=""
source bench/models/side_by_side.sh moe_vs_torch.sh "$@"
# --peak_gflops 1 skips train_gpt's start-up sgemm measurement (this script compares tokens/s).
# --data random: uniform random tokens as the PyTorch twin trains on, so the routing is as
# balanced on both sides (the embedded sorting task routes unevenly in its first steps).
loom=("$build/examples/train_gpt" --preset "$preset" --batch "$batch" --steps "$steps"
      --threads "$threads" --peak_gflops 1 --data random)

for r in $(seq 1 "$rounds"); do
  echo "[round $r/$rounds] loom one rank"
  "${loom[@]}" --metrics_out "$work/one.$r.jsonl" | grep '^step' | tail -n 1
  for variant in overlap no_overlap dual_batch; do
    case $variant in
      overlap) flags=(--moe_overlap=true) ;;
      no_overlap) flags=(--moe_overlap=false) ;;
      dual_batch) flags=(--moe_dual_batch) ;;
    esac
    echo "[round $r/$rounds] loom ep 2, $variant"
    "${mpi[@]}" "${loom[@]}" --ep 2 "${flags[@]}" \
      --metrics_out "$work/loom_$variant.$r.jsonl" | grep '^step' | tail -n 1
  done
  echo "[round $r/$rounds] torch ep 2 (all_to_all_single, gloo)"
  (cd scripts/torch_reference && OMP_NUM_THREADS=$threads "$python" train_moe_torch.py \
    --preset "$preset" --batch "$batch" --steps "$steps" --threads "$threads" --world_size 2 \
    --json "$work/torch.$r.json" | tail -n 1)
done

"$python" - "$work" "$rounds" "$preset" "$batch" "$threads" "$json" <<'PY'
import json, sys
sys.path.insert(0, "bench/models")
from side_by_side import cpu_model, loom_median, torch_median
work, rounds, preset, batch, threads, out = sys.argv[1:7]
cpu = cpu_model()
one = loom_median(f"{work}/one.{{r}}.jsonl", rounds, "tokens_per_s")
theirs, version = torch_median(f"{work}/torch.{{r}}.json", rounds)
res = {"preset": preset, "batch": int(batch), "threads": int(threads), "cpu": cpu,
       "torch": version, "torch_tokens_per_s": theirs, "loom_1rank_tokens_per_s": one}
print(f"CPU: {cpu}; {preset}, global batch {batch}, {threads} thread(s) per rank, ep 2")
for variant in ("overlap", "no_overlap", "dual_batch"):
    ours = loom_median(f"{work}/loom_{variant}.{{r}}.jsonl", rounds, "tokens_per_s")
    a2a = loom_median(f"{work}/loom_{variant}.{{r}}.jsonl", rounds, "exposed_a2a_ms")
    res[f"loom_{variant}"] = {"tokens_per_s": ours, "exposed_a2a_ms": a2a, "ratio": ours / theirs}
    print(f"  loom ep 2 {variant:10s} {ours:6.0f} tok/s (exposed all-to-all {a2a:5.1f} ms) "
          f"vs torch {version} {theirs:6.0f}: {ours / theirs:.2f}x (goal >= 1.5x)")
print(f"  loom one rank: {one:.0f} tok/s")
if out:
    json.dump(res, open(out, "w"), indent=1)
PY
