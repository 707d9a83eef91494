#!/usr/bin/env bash
# The scaling suite: one command runs a matrix of data-parallel layouts × link rates on posed
# clusters (scripts/posed_cluster.sh), writes one JSONL row per run and draws the plots.
#
#   bash bench/scaling/suite.sh [--rates unlimited,10gbit,1gbit] [--layouts all|name,...]
#                               [--preset cpu-small] [--batch 8] [--steps 6] [--rounds 1]
#                               [--out out/scaling]
#
# Layouts (2 posed hosts × 1 rank, dp 2 across the link; every rank 1 thread):
#   ddp_mpi          --comm mpi (MPI's collectives)                 ZeRO 0
#   ddp_hier_mpi     --comm hier over MPI's point-to-point          ZeRO 0
#   ddp_hier_socket  --comm hier over loom's sockets                ZeRO 0
#   zero1/2/3        --comm hier over loom's sockets                ZeRO 1/2/3
#   ddp_bf16wire     --comm hier over loom's sockets, --grad_reduce_dtype bf16
#   zero1_sparse     as zero1 with --sparse_embedding_grad (the tied embedding's head gradient
#                    all-reduced early in backward, its lookup gradient sent as rows)
# and on 2 posed hosts × 2 ranks (dp 4):
#   zero1_4          --comm hier over loom's sockets, ZeRO-1 over all 4 ranks
#   hsdp_zero1       --hsdp_shard 2: ZeRO-1 inside each host, shards all-reduced across
#   hsdp_bf16        as hsdp_zero1 with --hsdp_reduce_dtype bf16 (bf16 between hosts only)
# plus one reference per layout with both ranks on one posed host (no link between them):
# the compute time the link adds to. --rounds N runs the whole matrix N times, one round after the
# other, so a slow minute of the machine touches every layout alike. Each row: tokens/s, step ms
# (median over the steps after the first two of every round's run), exposed communication ms
# (waiting for reductions after backward and for parameter all-gathers), bytes each
# rank sends over its link per step (from the layout: ring all-reduce 2(n-1)/n of the gradient
# bytes, reduce-scatter and all-gather (n-1)/n each, ZeRO-3's two parameter all-gathers), the
# link time those bytes need at the rate, the bound max(compute, link time) and step / bound, the
# peak bytes per rank and the CPU model. Then bench/scaling/plot.py draws the PNGs and a markdown
# table next to the JSONL. Needs root (network namespaces).
set -euo pipefail
cd "$(dirname "$0")/../.."

rates=unlimited,10gbit,1gbit layouts=all preset=cpu-small batch=8 steps=6 rounds=1 out=out/scaling
while [ $# -gt 0 ]; do
  case "$1" in
    --rates) rates=$2; shift 2 ;;
    --layouts) layouts=$2; shift 2 ;;
    --preset) preset=$2; shift 2 ;;
    --batch) batch=$2; shift 2 ;;
    --steps) steps=$2; shift 2 ;;
    --rounds) rounds=$2; shift 2 ;;
    --out) out=$2; shift 2 ;;
    *) echo "suite.sh: unknown argument '$1' (see the header)" >&2; exit 2 ;;
  esac
done
[ "$steps" -ge 3 ] || { echo "suite.sh: --steps must be >= 3" >&2; exit 2; }
[[ "$rounds" =~ ^[1-9][0-9]*$ ]] || { echo "suite.sh: --rounds must be >= 1, got '$rounds'" >&2; exit 2; }
bash scripts/posed_cluster.sh check

declare -A FLAGS=(
  [ddp_mpi]="--comm mpi --zero 0"
  [ddp_hier_mpi]="--comm hier --zero 0"
  [ddp_hier_socket]="--comm hier --zero 0"
  [zero1]="--comm hier --zero 1"
  [zero2]="--comm hier --zero 2"
  [zero3]="--comm hier --zero 3"
  [ddp_bf16wire]="--comm hier --zero 0 --grad_reduce_dtype bf16"
  [zero1_sparse]="--comm hier --zero 1 --sparse_embedding_grad"
  [zero1_4]="--comm hier --zero 1"
  [hsdp_zero1]="--comm hier --zero 1 --hsdp_shard 2"
  [hsdp_bf16]="--comm hier --zero 1 --hsdp_shard 2 --hsdp_reduce_dtype bf16"
)
declare -A PER_HOST=([zero1_4]=2 [hsdp_zero1]=2 [hsdp_bf16]=2)
ORDER=(ddp_mpi ddp_hier_mpi ddp_hier_socket zero1 zero2 zero3 ddp_bf16wire zero1_sparse zero1_4
  hsdp_zero1 hsdp_bf16)
[ "$layouts" = all ] && layouts=$(IFS=,; echo "${ORDER[*]}")
IFS=, read -r -a chosen <<< "$layouts"
for l in "${chosen[@]}"; do
  [ -n "${FLAGS[$l]+x}" ] || { echo "suite.sh: unknown layout '$l' (${ORDER[*]})" >&2; exit 2; }
done
IFS=, read -r -a rate_list <<< "$rates"

bash scripts/build.sh > /dev/null
build=$(cd "${LOOM_BUILD_DIR:-build}" && pwd)
mkdir -p "$out"
rows="$out/results.jsonl"
: > "$rows"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

transport_of() { [ "$1" = ddp_mpi ] || [ "$1" = ddp_hier_mpi ] && echo mpi || echo socket; }

run() {  # round layout hosts ranks_per_host rate: appends the steps after the first two
  local round=$1 layout=$2 hosts=$3 per=$4 rate=$5 transport
  transport=$(transport_of "$layout")
  local metrics="$work/run.jsonl"
  rm -f "$metrics"
  echo "[suite] round $round/$rounds: $layout: $hosts posed host(s) x $per rank(s), links $rate"
  # shellcheck disable=SC2086  # FLAGS holds several flags
  if ! LOOM_P2P_TRANSPORT=$transport LOOM_NUM_THREADS=1 bash scripts/posed_cluster.sh run \
      --hosts "$hosts" --ranks_per_host "$per" --rate "$rate" --name suite --timeout 900 -- \
      "$build/examples/train_gpt" --preset "$preset" --batch "$batch" --steps "$steps" \
      --threads 1 ${FLAGS[$layout]} --metrics_out "$metrics" > "$work/log" 2>&1; then
    cat "$work/log" >&2
    echo "[suite] $layout at $rate failed (log above)" >&2
    exit 1
  fi
  tail -n +3 "$metrics" >> "$work/$layout-$hosts-$rate.jsonl"
  cp "$work/log" "$work/$layout-$hosts-$rate.log"
}

row() {  # layout hosts ranks_per_host rate: one JSONL row from every round's steps
  local layout=$1 hosts=$2 per=$3 rate=$4
  python3 - "$work/$layout-$hosts-$rate.jsonl" "$work/$layout-$hosts-$rate.log" "$layout" \
      "$hosts" "$per" "$rate" "$(transport_of "$layout")" "${FLAGS[$layout]}" "$rounds" \
      >> "$rows" <<'PY'
import json, re, statistics, sys
metrics, log, layout, hosts, per, rate, transport, flags, rounds = sys.argv[1:10]
steps = [json.loads(l) for l in open(metrics)]
params = int(re.search(r"(\d+) parameters", open(log).read()).group(1))
sys.path.insert(0, "bench/models")
from side_by_side import cpu_model
cpu = cpu_model()
med = lambda k: statistics.median(s[k] for s in steps)
f = flags.split()
zero = int(f[f.index("--zero") + 1])
wire = 2 if "bf16" in flags else 4
peak = max(sum(r.values()) for s in steps for r in s["peak_bytes_per_rank"])
row = {"layout": layout, "hosts": int(hosts), "ranks_per_host": int(per), "rate": rate,
       "comm": f[f.index("--comm") + 1], "transport": transport, "zero": zero,
       "wire_bytes": wire, "parameters": params, "tokens_per_s": med("tokens_per_s"),
       "step_ms": med("step_ms"), "exposed_reduce_ms": med("exposed_reduce_ms"),
       "exposed_gather_ms": med("exposed_gather_ms"),
       "exposed_comm_ms": statistics.median(s["exposed_reduce_ms"] + s["exposed_gather_ms"]
                                            for s in steps),
       "peak_bytes_per_rank": peak, "cpu": cpu, "rounds": int(rounds)}
h, k = int(hosts), int(per)
n = h * k
if "--hsdp_shard" in f:  # only the shards' all-reduce crosses: 1/k of the gradients per rank
    hsdp_wire = 2 if "--hsdp_reduce_dtype" in f else 4
    row["link_bytes_per_step"] = 2 * (h - 1) / h * params * hsdp_wire  # per host link
elif h > 1:
    # A ring over the n ranks leaves each host once (ranks of a host are consecutive): each host
    # link carries one rank's ring traffic.
    # Reduce-scatter: the first hop carries a rank's own values in the wire dtype, the other
    # n - 2 hops f32 partial sums; then the all-gathers (n - 1 blocks each): the reduced
    # gradients (DDP), the updated f32 parameters (ZeRO-1/2), or the parameters before forward
    # and before backward (ZeRO-3).
    block = params / n
    sent = block * (wire + (n - 2) * 4)
    gather = (n - 1) * block
    sent += {0: gather * wire, 1: gather * 4, 2: gather * 4, 3: 2 * gather * 4}[zero]
    if "--sparse_embedding_grad" in f:
        # The same bytes for the table (its all-reduce replaces its reduce-scatter and gather),
        # plus every rank's lookup rows: f32 [B·T/n, C] and their i32 token ids.
        head = open(log).read()
        dim = int(re.search(r"dim (\d+)", head).group(1))
        b, t = map(int, re.search(r"B (\d+), T (\d+)", head).groups())
        sent += (n - 1) * (b * t // n) * (dim + 1) * 4
    row["link_bytes_per_step"] = sent
row["wire_bytes"] = wire
print(json.dumps(row))
PY
}

for ((round = 1; round <= rounds; round++)); do
  for l in "${chosen[@]}"; do
    per=${PER_HOST[$l]:-1}
    run "$round" "$l" 1 $((2 * per)) unlimited  # the reference: every rank on one posed host
    for rate in "${rate_list[@]}"; do run "$round" "$l" 2 "$per" "$rate"; done
  done
done
for l in "${chosen[@]}"; do
  per=${PER_HOST[$l]:-1}
  row "$l" 1 $((2 * per)) unlimited
  for rate in "${rate_list[@]}"; do row "$l" 2 "$per" "$rate"; done
done

plot_python=$(bash bench/scaling/plot_venv.sh)
"$plot_python" bench/scaling/plot.py "$rows" "$out"
echo "[suite] rows: $rows; plots and report: $out/"
