#!/usr/bin/env bash
# Pipeline-parallel training throughput side by side in one run: loom at pp 2 (mpirun, loom's
# shared-memory point-to-point channels) vs PyTorch's torch.distributed.pipelining (gloo) on 2
# processes, schedule by schedule — GPipe, 1F1B, interleaved 1F1B (2 stages per rank), ZB-V and
# DualPipe-V, the zero-bubble schedules PyTorch ships for this layout — with the same GPT preset,
# global batch, micro-batches, sequence length, threads per rank, f32 and AdamW settings (the
# gradient norm clipped over all stages on both sides), and loom's ZB-H1 and single-rank run for
# reference. Runs alternate round by round; each figure is the median over the steps after the
# first two. The CPU model is printed with the figures.
#
#   bash bench/models/pp_vs_torch.sh [--preset cpu-small] [--batch 8] [--micro_batches 4]
#                                    [--steps 8] [--threads 1] [--rounds 2] [--json out.json]
#
# Uses the current PyTorch release (bench/models/torch_venv.sh; LOOM_TORCH_PYTHON overrides).
set -euo pipefail
cd "$(dirname "$0")/../.."

preset=cpu-small batch=8 steps=8 threads=1 rounds=2 json="" micro_batches=4
args=()
while [ $# -gt 0 ]; do  # --micro_batches is this script's; the rest are side_by_side.sh's
  case "$1" in
    --micro_batches) micro_batches=$2; shift 2 ;;
    *) args+=("$1"); shift ;;
  esac
done
source bench/models/side_by_side.sh pp_vs_torch.sh "${args[@]}"
schedules=(gpipe 1f1b interleaved zb-v dualpipe-v)  # the ones both ship
# --peak_gflops 1 skips train_gpt's start-up sgemm measurement (this script compares tokens/s).
loom=("$build/examples/train_gpt" --preset "$preset" --batch "$batch" --steps "$steps"
      --threads "$threads" --peak_gflops 1)

for r in $(seq 1 "$rounds"); do
  echo "[round $r/$rounds] loom one rank"
  "${loom[@]}" --grad_accum "$micro_batches" --metrics_out "$work/one.$r.jsonl" | grep '^step' | tail -n 1
  for s in "${schedules[@]}" zb-h1; do
    echo "[round $r/$rounds] loom pp 2 $s"
    "${mpi[@]}" "${loom[@]}" --pp 2 --schedule "$s" --micro_batches "$micro_batches" \
      --metrics_out "$work/loom_$s.$r.jsonl" | grep '^step' | tail -n 1
    [ "$s" = zb-h1 ] && continue
    echo "[round $r/$rounds] torch pp 2 $s (torch.distributed.pipelining, gloo)"
    OMP_NUM_THREADS=$threads "$python" scripts/torch_reference/train_gpt_torch.py \
      --preset "$preset" --batch "$batch" --steps "$steps" --threads "$threads" --world_size 2 \
      --pp "$s" --micro_batches "$micro_batches" --json "$work/torch_$s.$r.json" | tail -n 1
  done
done

"$python" - "$work" "$rounds" "$preset" "$batch" "$micro_batches" "$threads" "$json" \
  "${schedules[@]}" <<'PY'
import json, sys
sys.path.insert(0, "bench/models")
from side_by_side import cpu_model, loom_median, torch_median
work, rounds, preset, batch, micro, threads, out = sys.argv[1:8]
schedules = sys.argv[8:]
cpu = cpu_model()
one = loom_median(f"{work}/one.{{r}}.jsonl", rounds, "tokens_per_s")
res = {"preset": preset, "batch": int(batch), "micro_batches": int(micro),
       "threads": int(threads), "cpu": cpu, "loom_1rank_tokens_per_s": one, "schedules": {}}
print(f"CPU: {cpu}; {preset}, global batch {batch} in {micro} micro-batches, "
      f"{threads} thread(s) per rank, pp 2")
for s in schedules + ["zb-h1"]:
    ours = loom_median(f"{work}/loom_{s}.{{r}}.jsonl", rounds, "tokens_per_s")
    row = {"loom_tokens_per_s": ours}
    if s == "zb-h1":
        print(f"  {s:11s} loom {ours:6.0f} tok/s (PyTorch ships no single-stage ZB-H1)")
    else:
        theirs, version = torch_median(f"{work}/torch_{s}.{{r}}.json", rounds)
        row.update(torch_tokens_per_s=theirs, ratio=ours / theirs)
        res["torch"] = version
        print(f"  {s:11s} loom {ours:6.0f} tok/s vs torch {version} {theirs:6.0f}: "
              f"{ours / theirs:.2f}x (goal >= 1.5x)")
    res["schedules"][s] = row
print(f"  loom one rank (gradient accumulation over {micro}): {one:.0f} tok/s")
if out:
    json.dump(res, open(out, "w"), indent=1)
PY
