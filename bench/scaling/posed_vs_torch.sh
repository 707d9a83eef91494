#!/usr/bin/env bash
# loom against PyTorch (2.15, pinned in bench/models/torch_venv.sh) on a posed cluster
# (scripts/posed_cluster.sh): 2 hosts × 1 rank behind links of --rate, same GPT preset, global
# batch, threads and AdamW settings on both sides, alternating round by round. Issue #16's rows,
# each against the better of PyTorch's DDP and FSDP2 (gloo over the same links):
#   fp32  loom ZeRO-1 (--comm hier over loom's sockets) vs DDP / FSDP2 in fp32  (target >= 1.5x)
#   bf16  loom ZeRO-1 --precision bf16 --autocast --grad_reduce_dtype bf16 vs CPU autocast bf16 with
#         DDP's bf16_compress_hook / FSDP2 reducing in bf16                    (target >= 1.5x)
# loom runs ZeRO-1, its layout for slow links: the reduce-scatter overlaps backward and the updated
# parameters' all-gather the next forward (docs/data_parallel.md).
# Each figure is the median tokens/s over the steps after the first two; loom's exposed
# communication (the share of a step spent waiting for reductions after backward and for the
# parameters' all-gathers in forward) beside it. Needs
# root for the namespaces. The CPU model is recorded with the figures.
#
#   bash bench/scaling/posed_vs_torch.sh [--rate 1gbit] [--preset cpu-small] [--batch 8]
#                                        [--steps 6] [--rounds 2] [--json out.json]
#                                        [--loom_flags "--sparse_embedding_grad"]
# --loom_flags: more train_gpt flags for both of loom's runs (recorded with the figures).
set -euo pipefail
cd "$(dirname "$0")/../.."

rate=1gbit preset=cpu-small batch=8 steps=6 rounds=2 json="" loom_flags=""
while [ $# -gt 0 ]; do
  case "$1" in
    --rate) rate=$2; shift 2 ;;
    --preset) preset=$2; shift 2 ;;
    --batch) batch=$2; shift 2 ;;
    --steps) steps=$2; shift 2 ;;
    --rounds) rounds=$2; shift 2 ;;
    --json) json=$2; shift 2 ;;
    --loom_flags) loom_flags=$2; shift 2 ;;
    *) echo "posed_vs_torch.sh: unknown argument '$1'" >&2; exit 2 ;;
  esac
done
if [ "$steps" -lt 3 ]; then echo "posed_vs_torch.sh: --steps must be >= 3" >&2; exit 2; fi
bash scripts/posed_cluster.sh check

source bench/models/torch_python.sh posed_vs_torch.sh
bash scripts/build.sh > /dev/null
build=$(cd "${LOOM_BUILD_DIR:-build}" && pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cluster=(bash scripts/posed_cluster.sh run --hosts 2 --rate "$rate" --name pvt --timeout 900 --)

loom() {  # name [train_gpt flags...]
  local name=$1
  shift
  echo "[round $r/$rounds] loom $name ($rate)"
  LOOM_P2P_TRANSPORT=socket LOOM_NUM_THREADS=1 "${cluster[@]}" "$build/examples/train_gpt" \
    --preset "$preset" --batch "$batch" --steps "$steps" --threads 1 --comm hier --zero 1 \
    --metrics_out "$work/loom_${name}_$r.jsonl" $loom_flags "$@" > "$work/loom_${name}_$r.log" 2>&1 ||
    { cat "$work/loom_${name}_$r.log" >&2; exit 1; }
}
torch() {  # name [train_gpt_torch flags...]
  local name=$1
  shift
  echo "[round $r/$rounds] torch $name ($rate)"
  OMP_NUM_THREADS=1 "${cluster[@]}" env MASTER_ADDR=10.231.0.1 MASTER_PORT=29533 \
    GLOO_SOCKET_IFNAME=eth0 "$python" "$PWD/scripts/torch_reference/train_gpt_torch.py" \
    --world_from_env --preset "$preset" --batch "$batch" --steps "$steps" --threads 1 \
    --json "$work/torch_${name}_$r.json" "$@" > "$work/torch_${name}_$r.log" 2>&1 ||
    { cat "$work/torch_${name}_$r.log" >&2; exit 1; }
}

for r in $(seq 1 "$rounds"); do
  loom fp32
  torch fp32
  torch fsdp2_fp32 --fsdp2
  loom bf16 --precision bf16 --autocast --grad_reduce_dtype bf16
  torch bf16 --precision bf16 --bf16_grads
  torch fsdp2_bf16 --fsdp2 --precision bf16 --bf16_grads
done

"$python" - "$work" "$rounds" "$preset" "$batch" "$rate" "$json" "$loom_flags" <<'PY'
import json, statistics, sys
sys.path.insert(0, "bench/models")
from side_by_side import cpu_model, torch_median
work, rounds, preset, batch, rate, out, loom_flags = sys.argv[1:8]
def loom(name):
    tok, exposed = [], []
    for r in range(1, int(rounds) + 1):
        steps = [json.loads(l) for l in open(f"{work}/loom_{name}_{r}.jsonl")][2:]
        tok += [s["tokens_per_s"] for s in steps]
        exposed += [(s["exposed_reduce_ms"] + s["exposed_gather_ms"]) / s["step_ms"] for s in steps]
    return statistics.median(tok), statistics.median(exposed)
def torch(name):
    return torch_median(f"{work}/torch_{name}_{{r}}.json", rounds)
cpu = cpu_model()
res = {"preset": preset, "batch": int(batch), "rate": rate, "hosts": 2, "cpu": cpu,
       "loom_flags": loom_flags}
print(f"CPU: {cpu}; 2 posed hosts x 1 rank x 1 thread, links {rate}; {preset}, global batch {batch}"
      + (f"; loom also {loom_flags}" if loom_flags else ""))
for name, what in (("fp32", "fp32"), ("bf16", "bf16 autocast, bf16 grads")):
    (l, exposed), (ddp, version), (fsdp2, _) = loom(name), torch(name), torch(f"fsdp2_{name}")
    best, which = max((ddp, "DDP"), (fsdp2, "FSDP2"))
    res[name] = {"loom_tokens_per_s": l, "loom_exposed_fraction": exposed,
                 "torch_ddp_tokens_per_s": ddp,
                 "torch_fsdp2_tokens_per_s": fsdp2, "torch": version, "ratio": l / best}
    print(f"  {what:26s} loom {l:6.0f} tok/s (comm exposed {100 * exposed:3.0f}% of the step)  torch {version} DDP {ddp:6.0f}  FSDP2 {fsdp2:6.0f}  "
          f"ratio to {which} {l / best:4.2f}x (target >= 1.5x)")
if out:
    json.dump(res, open(out, "w"), indent=1)
PY
