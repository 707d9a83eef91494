#!/usr/bin/env bash
# Tensor-parallel training throughput side by side in one run: loom at tp 2 (mpirun, loom's
# shared-memory collectives) vs PyTorch's tensor parallelism (DTensor parallelize_module:
# Megatron column/row pairs, vocabulary-sharded embedding and loss_parallel cross-entropy, gloo)
# on 2 processes, same GPT preset, global batch, sequence length, threads per rank, f32 and AdamW
# settings; and loom's single-rank run at the same global batch. The same run measures the time
# loom's ranks wait for tp collectives (exposed_tp_ms) with the GEMM/collective overlap on and off
# (--tp_overlap), and with sequence parallelism. Runs alternate round by round; each figure is the
# median over the steps after the first two. The CPU model is printed with the figures.
#
#   bash bench/models/tp_vs_torch.sh [--preset cpu-small] [--batch 8] [--steps 8] [--threads 1]
#                                    [--rounds 2] [--json out.json]
#
# Uses the current PyTorch release (bench/models/torch_venv.sh; LOOM_TORCH_PYTHON overrides).
set -euo pipefail
cd "$(dirname "$0")/../.."

preset=cpu-small batch=8 steps=8 threads=1 rounds=2 json=""
source bench/models/side_by_side.sh tp_vs_torch.sh "$@"
# --peak_gflops 1 skips train_gpt's start-up sgemm measurement (this script compares tokens/s).
loom=("$build/examples/train_gpt" --preset "$preset" --batch "$batch" --steps "$steps"
      --threads "$threads" --peak_gflops 1)

run_loom() {  # name [train_gpt flags...] (2 ranks unless the name starts with "one")
  local name=$1; shift
  echo "[round $r/$rounds] loom $name $*"
  if [[ $name == one* ]]; then
    "${loom[@]}" "$@" --metrics_out "$work/$name.$r.jsonl" | grep '^step' | tail -n 1
  else
    "${mpi[@]}" "${loom[@]}" "$@" --metrics_out "$work/$name.$r.jsonl" | grep '^step' | tail -n 1
  fi
}

for r in $(seq 1 "$rounds"); do
  run_loom one
  run_loom tp2 --tp 2
  run_loom tp2_serial --tp 2 --tp_overlap=false
  run_loom tp2_sp --tp 2 --sequence_parallel
  run_loom tp2_sp_serial --tp 2 --sequence_parallel --tp_overlap=false
  echo "[round $r/$rounds] torch tensor parallel (DTensor, gloo), 2 processes"
  OMP_NUM_THREADS=$threads "$python" scripts/torch_reference/train_gpt_torch.py \
    --preset "$preset" --batch "$batch" --steps "$steps" --threads "$threads" --world_size 2 \
    --tp --json "$work/torch_tp2.$r.json" | tail -n 1
done

"$python" - "$work" "$rounds" "$preset" "$batch" "$threads" "$json" <<'PY'
import json, sys
sys.path.insert(0, "bench/models")
from side_by_side import cpu_model, loom_median, torch_median
work, rounds, preset, batch, threads, out = sys.argv[1:7]
def loom(name, key):
    return loom_median(f"{work}/{name}.{{r}}.jsonl", rounds, key)
theirs, version = torch_median(f"{work}/torch_tp2.{{r}}.json", rounds)
cpu = cpu_model()
one, tp2, tp2_sp = loom("one", "tokens_per_s"), loom("tp2", "tokens_per_s"), loom("tp2_sp", "tokens_per_s")
res = {"preset": preset, "batch": int(batch), "threads": int(threads), "cpu": cpu,
       "torch": version, "loom_1rank_tokens_per_s": one, "loom_tp2_tokens_per_s": tp2,
       "loom_tp2_sp_tokens_per_s": tp2_sp, "torch_tp2_tokens_per_s": theirs,
       "ratio": tp2 / theirs, "tp2_speedup": tp2 / one}
print(f"CPU: {cpu}; {preset}, global batch {batch}, {threads} thread(s) per rank")
print(f"  loom tp 2 {tp2:.0f} tok/s (SP {tp2_sp:.0f}) vs torch {version} tensor parallel "
      f"{theirs:.0f}: ratio {tp2 / theirs:.2f}x (goal >= 1.5x)")
print(f"  loom tp 2 / loom 1 rank ({one:.0f} tok/s) = {tp2 / one:.2f}")
for name in ("tp2", "tp2_sp"):
    on, off = loom(name, "exposed_tp_ms"), loom(name + "_serial", "exposed_tp_ms")
    res[f"{name}_exposed_tp_ms"], res[f"{name}_serial_exposed_tp_ms"] = on, off
    print(f"  {name}: waiting for tp collectives {on:.1f} ms/step with overlap, {off:.1f} without")
if out:
    json.dump(res, open(out, "w"), indent=1)
PY
