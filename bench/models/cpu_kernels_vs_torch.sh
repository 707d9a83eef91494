#!/usr/bin/env bash
# Issue #15's acceptance figures in one run, side by side with the current PyTorch release (pinned
# in bench/models/torch_venv.sh, installed into a venv outside the repository on first use):
#   fp32    single rank, 1 thread: loom vs torch                        (target loom >= 1.2x)
#   ddp     2 ranks x 1 thread: loom DP (mpirun, shm) vs torch DDP (gloo) (target >= 1.2x)
#   bf16    single rank, 1 thread: loom --precision bf16 --autocast vs torch CPU autocast bf16
#           (>= 1.2x; both round the forward GEMMs' inputs to bf16), loom bf16 / loom fp32
#           (target >= 1.8x on CPUs with AMX), and loom --precision bf16 without --autocast
#           (forward GEMMs in f32) for reference
#   threads loom single rank, 2 threads / 1 thread                       (target >= 1.8x)
# Same GPT preset, global batch, sequence length and AdamW settings on both sides. Runs alternate
# round by round so drift affects every configuration; each figure is the median tokens/s over
# the steps after the first two. The CPU model and flags are recorded with the figures.
#
#   bash bench/models/cpu_kernels_vs_torch.sh [--preset cpu-small] [--batch 8] [--steps 6]
#                                             [--rounds 2] [--json out.json]
set -euo pipefail
cd "$(dirname "$0")/../.."

preset=cpu-small batch=8 steps=6 rounds=2 json=""
while [ $# -gt 0 ]; do
  case "$1" in
    --preset) preset=$2; shift 2 ;;
    --batch) batch=$2; shift 2 ;;
    --steps) steps=$2; shift 2 ;;
    --rounds) rounds=$2; shift 2 ;;
    --json) json=$2; shift 2 ;;
    *) echo "cpu_kernels_vs_torch.sh: unknown argument '$1'" >&2; exit 2 ;;
  esac
done
if [ "$steps" -lt 3 ]; then echo "cpu_kernels_vs_torch.sh: --steps must be >= 3" >&2; exit 2; fi
if [ $((batch % 2)) -ne 0 ]; then echo "cpu_kernels_vs_torch.sh: --batch must be even" >&2; exit 2; fi

source bench/models/torch_python.sh cpu_kernels_vs_torch.sh

bash scripts/build.sh >/dev/null
build=${LOOM_BUILD_DIR:-build}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
common=(--preset "$preset" --batch "$batch" --steps "$steps")

loom() {  # name ranks threads [train_gpt flags...]
  local name=$1 ranks=$2 threads=$3 launch=()
  shift 3
  # One rank runs without mpirun: mpirun would bind it to one core, and 2 threads would share it.
  [ "$ranks" -gt 1 ] && launch=(mpirun --allow-run-as-root --oversubscribe -np "$ranks" -x LOOM_NUM_THREADS)
  echo "[round $r/$rounds] loom $name"
  LOOM_NUM_THREADS=$threads timeout 900 "${launch[@]}" "$build/examples/train_gpt" "${common[@]}" \
    --threads "$threads" --peak_gflops 1 --metrics_out "$work/loom_${name}_$r.jsonl" "$@" \
    > "$work/loom_${name}_$r.log" 2>&1 || { cat "$work/loom_${name}_$r.log" >&2; exit 1; }
}
torch() {  # name world [train_gpt_torch flags...]
  local name=$1 world=$2
  shift 2
  echo "[round $r/$rounds] torch $name"
  OMP_NUM_THREADS=1 timeout 900 "$python" scripts/torch_reference/train_gpt_torch.py \
    "${common[@]}" --threads 1 --world_size "$world" --json "$work/torch_${name}_$r.json" "$@" \
    > "$work/torch_${name}_$r.log" 2>&1 || { cat "$work/torch_${name}_$r.log" >&2; exit 1; }
}

for r in $(seq 1 "$rounds"); do
  loom fp32 1 1
  torch fp32 1
  loom ddp 2 1
  torch ddp 2
  loom bf16 1 1 --precision bf16 --autocast
  loom bf16_storage 1 1 --precision bf16
  torch bf16 1 --precision bf16
  loom threads2 1 2
done
grep -h "bf16 GEMM" "$work"/loom_bf16_1.log | head -n 1 | sed 's/^.*bf16 GEMM/loom bf16 GEMM/' || true

"$python" - "$work" "$rounds" "$preset" "$batch" "$json" <<'PY'
import json, statistics, sys, platform
work, rounds, preset, batch, out = sys.argv[1:6]
def loom(name):
    v = []
    for r in range(1, int(rounds) + 1):
        steps = [json.loads(l) for l in open(f"{work}/loom_{name}_{r}.jsonl")]
        v += [s["tokens_per_s"] for s in steps[2:]]
    return statistics.median(v)
def torch(name):
    v = []
    for r in range(1, int(rounds) + 1):
        t = json.load(open(f"{work}/torch_{name}_{r}.json"))
        v += [s["tokens_per_s"] for s in t["steps"][2:]]
    return statistics.median(v), t["torch"]
cpu = {}
for line in open("/proc/cpuinfo"):
    k, _, v = line.partition(":")
    k = k.strip()
    if k in ("model name", "vendor_id") and k not in cpu: cpu[k] = v.strip()
    if k == "flags":
        flags = v.split()
        cpu["flags"] = " ".join(f for f in flags if f.startswith(("avx", "amx", "fma", "f16c")))
        break
res = {"preset": preset, "batch": int(batch), "cpu": cpu}
tf, version = torch("fp32"); td, _ = torch("ddp"); tb, _ = torch("bf16")
lf, ld, lb, l2 = loom("fp32"), loom("ddp"), loom("bf16"), loom("threads2")
ls = loom("bf16_storage")
res.update(torch_version=version, loom_fp32=lf, torch_fp32=tf, loom_ddp=ld, torch_ddp=td,
           loom_bf16_autocast=lb, loom_bf16_no_autocast=ls, torch_bf16=tb, loom_2threads=l2)
print(f"CPU: {cpu.get('model name')} ({cpu.get('vendor_id')}; {cpu.get('flags')})")
print(f"{preset}, global batch {batch}, tokens/s (median), torch {version}:")
rows = [("fp32, 1 rank x 1 thread", lf, tf, 1.2), ("DDP, 2 ranks x 1 thread", ld, td, 1.2),
        ("bf16 autocast, 1 x 1", lb, tb, 1.2)]
for name, l, t, target in rows:
    print(f"  {name:26s} loom {l:7.0f}  torch {t:7.0f}  ratio {l / t:5.2f}x (target >= {target}x)")
print(f"  loom bf16 without --autocast   {ls:7.0f}  ({ls / tb:5.2f}x torch autocast)")
print(f"  loom bf16 / loom fp32          {lb / lf:5.2f}x (target >= 1.8x where the CPU has AMX)")
print(f"  loom 2 threads / 1 thread      {l2 / lf:5.2f}x (target >= 1.8x)")
if out:
    json.dump(res, open(out, "w"), indent=1)
PY
