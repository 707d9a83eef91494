#!/usr/bin/env bash
# ctest `posed_cluster` (label cluster): scripts/posed_cluster.sh end to end on 2 posed hosts
# behind 1 Gbit/s links. Exits 77 (ctest: skipped, with the reason) where namespaces cannot be
# made. Checks:
#   1. an all-reduce across the hosts (loom's ring and hier over MPI's transport and over loom's
#      sockets, MPI's own) gives the exact sums;
#      also with 2 ranks per posed host (hier: shared memory inside, the link across); each posed
#      host's ranks run on its own cores (--cores split);
#   2. the hosts are separate hosts: loom's shm backend refuses them with its message;
#   3. a 2-rank data-parallel run across the hosts (--comm hier over loom's sockets) reproduces the
#      single-rank losses within the fp32 tolerance of the equivalence tests
#      (tests/parallel/dp_checks.h: 5e-6), and so does HSDP on 2 hosts x 2 ranks; a MoE run at
#      ep 4 with the hierarchical dispatch (a group per host) does within the ep tolerance (5e-5);
#   4. a failing job reports its failure and, like every run above, leaves no namespace behind;
#   5. an interrupted job (SIGTERM to the script) stops every rank and leaves nothing behind.
#
#   tests/cluster/posed_cluster_test.sh BUILD_DIR
set -euo pipefail
build=$(cd "${1:?usage: posed_cluster_test.sh BUILD_DIR}" && pwd)
repo=$(cd "$(dirname "$0")/../.." && pwd)
pc="$repo/scripts/posed_cluster.sh"
name="ct$$"
work=$(mktemp -d)
cleanup() { bash "$pc" down --name "$name"; rm -rf "$work"; }
trap cleanup EXIT

if ! bash "$pc" check --name "$name" 2> "$work/why"; then
  echo "SKIPPED: $(cat "$work/why")"
  exit 77
fi
fail() { echo "FAILED: $*" >&2; exit 1; }
left_behind() { ip netns list | awk '{print $1}' | grep -E "^$name-" || true; }
cluster() { bash "$pc" run --hosts 2 --rate 1gbit --name "$name" --timeout 300 "$@"; }

# coll_bench output $1 has rows of every backend named after it, and no wrong element in any row.
exact_rows() {
  python3 - "$@" <<'PY' || { cat "$1"; fail "all-reduce results in $1"; }
import sys
rows = [r for r in (l.split() for l in open(sys.argv[1])) if r and r[0].isdigit()]
missing = set(sys.argv[2:]) - {r[2] for r in rows}
assert not missing, f"missing backends: {missing}"
wrong = [r for r in rows if r[6] != "0"]
assert not wrong, f"wrong elements: {wrong}"
print(f"{len(rows)} rows, every element exact")
PY
}

echo "== 1. all-reduce across 2 posed hosts at 1 Gbit/s"
cluster -- "$build/bench/coll_bench" --op allreduce --min_bytes 1K --max_bytes 4M --cycles 1 \
  --backends ring,hier,ring@LOOM_P2P_TRANSPORT=socket,hier@LOOM_P2P_TRANSPORT=socket,mpi,MPI \
  > "$work/coll.txt" 2>&1 || { cat "$work/coll.txt"; fail "coll_bench"; }
cat "$work/coll.txt"
exact_rows "$work/coll.txt" loom_ring loom_hier MPI loom_ring@LOOM_P2P_TRANSPORT=socket \
  loom_hier@LOOM_P2P_TRANSPORT=socket
echo "== 1b. 2 posed hosts x 2 ranks: hier composes shared memory inside and the link across"
bash "$pc" run --hosts 2 --ranks_per_host 2 --rate 1gbit --name "$name" --timeout 300 -- \
  "$build/bench/coll_bench" --op allreduce --min_bytes 1K --max_bytes 1M --cycles 1 \
  --backends hier,hier@LOOM_P2P_TRANSPORT=socket,MPI > "$work/coll4.txt" 2>&1 ||
  { cat "$work/coll4.txt"; fail "coll_bench on 2 x 2"; }
exact_rows "$work/coll4.txt" loom_hier MPI loom_hier@LOOM_P2P_TRANSPORT=socket
[ -z "$(left_behind)" ] || fail "namespaces left behind: $(left_behind)"
echo "== 1c. every posed host's ranks on its own cores (--cores split), or on all where too few"
cores=$(nproc)
bash "$pc" run --hosts 2 --ranks_per_host 2 --rate 1gbit --name "$name" --timeout 60 -- \
  /bin/sh -c 'echo "$(hostname) $(grep Cpus_allowed_list /proc/self/status | cut -f2)"' \
  > "$work/cores.txt" 2>&1 || { cat "$work/cores.txt"; fail "the cores check"; }
for h in 0 1; do
  want="0-$((cores - 1))"
  [ "$cores" -ge 2 ] && want=$((h * cores / 2))-$(((h + 1) * cores / 2 - 1))
  got=$(awk -v host="$name-h$h" '$1 == host {print $2}' "$work/cores.txt" | sort -u)
  # taskset writes a one-core range as the core alone
  [ "$got" = "$want" ] || [ "$want" = "$got-$got" ] ||
    { cat "$work/cores.txt"; fail "host $h's ranks on cores '$got', expected $want"; }
done
echo "host cores as expected: $(sort -u "$work/cores.txt" | grep "^$name-h" | tr '\n' ' ')"

echo "== 2. loom's shm backend refuses ranks on different posed hosts"
if cluster -- "$build/examples/train_gpt" --preset tiny --steps 1 --comm shm > "$work/shm.txt" 2>&1; then
  cat "$work/shm.txt"; fail "--comm shm ran across posed hosts"
fi
grep -q "the shm backend needs every rank on one host" "$work/shm.txt" ||
  { cat "$work/shm.txt"; fail "no shm refusal message"; }

# The 6 losses in metrics file $1 ($2 names the run) are the single-rank run's ($3, default
# one.jsonl) within a tolerance ($4, default 5e-6: the fp32 tolerance of the equivalence tests).
same_losses() {
  python3 - "${3:-$work/one.jsonl}" "$1" "$2" "${4:-5e-6}" <<'PY' || fail "$2: losses differ from one rank's"
import json, sys
one, got = ([json.loads(l)["loss"] for l in open(p)] for p in sys.argv[1:3])
tolerance = float(sys.argv[4])
assert len(one) == len(got) == 6, (len(one), len(got))
worst = max(abs(a - b) for a, b in zip(one, got))
print(f"{sys.argv[3]}: final loss {got[-1]:.6f} (one rank {one[-1]:.6f}), largest difference {worst:.2e}")
assert worst <= tolerance, f"difference {worst} > {tolerance}"
PY
}

echo "== 3. data parallelism across the hosts reproduces one rank"
common=(--preset tiny --steps 6 --batch 8 --lr 3e-3 --threads 1)
"$build/examples/train_gpt" "${common[@]}" --metrics_out "$work/one.jsonl" > "$work/one.txt" 2>&1 ||
  { cat "$work/one.txt"; fail "single-rank run"; }
LOOM_P2P_TRANSPORT=socket cluster -- "$build/examples/train_gpt" "${common[@]}" --comm hier \
  --zero 1 --metrics_out "$work/two.jsonl" > "$work/two.txt" 2>&1 ||
  { cat "$work/two.txt"; fail "2-host run"; }
grep -q "layout dp 2" "$work/two.txt" || { cat "$work/two.txt"; fail "not a dp 2 run"; }
same_losses "$work/two.jsonl" "2 posed hosts"

echo "== 3b. HSDP on 2 posed hosts x 2 ranks (ZeRO-1 inside each host, replicas across)"
LOOM_P2P_TRANSPORT=socket bash "$pc" run --hosts 2 --ranks_per_host 2 --rate 1gbit --name "$name" \
  --timeout 300 -- "$build/examples/train_gpt" "${common[@]}" --comm hier --zero 1 \
  --hsdp_shard 2 --metrics_out "$work/hsdp.jsonl" > "$work/hsdp.txt" 2>&1 ||
  { cat "$work/hsdp.txt"; fail "HSDP run"; }
grep -q "hsdp: shards of 2 ranks, 2 replicas" "$work/hsdp.txt" || { cat "$work/hsdp.txt"; fail "not HSDP"; }
same_losses "$work/hsdp.jsonl" "HSDP on 2 posed hosts x 2 ranks"

echo "== 3c. MoE on 2 posed hosts x 2 ranks: ep 4, a group per host, hierarchical dispatch"
# Node-limited to one host per token, with the dual micro-batch overlap; against one rank with the
# same routing within the expert-parallel loss tolerance of the equivalence tests (5e-5).
moe=(--preset tiny-moe --steps 6 --batch 8 --lr 3e-3 --threads 1 --moe_groups 2 --moe_top_groups 1)
"$build/examples/train_gpt" "${moe[@]}" --metrics_out "$work/moe_one.jsonl" > "$work/moe_one.txt" 2>&1 ||
  { cat "$work/moe_one.txt"; fail "single-rank MoE run"; }
LOOM_P2P_TRANSPORT=socket bash "$pc" run --hosts 2 --ranks_per_host 2 --rate 1gbit --name "$name" \
  --timeout 300 -- "$build/examples/train_gpt" "${moe[@]}" --comm hier --ep 4 \
  --moe_hier_dispatch --moe_dual_batch --metrics_out "$work/moe.jsonl" > "$work/moe.txt" 2>&1 ||
  { cat "$work/moe.txt"; fail "MoE run"; }
same_losses "$work/moe.jsonl" "MoE ep 4 hierarchical on 2 posed hosts x 2 ranks" \
  "$work/moe_one.jsonl" 5e-5

echo "== 4. a failing job fails and leaves nothing behind"
if cluster -- /bin/false > "$work/false.txt" 2>&1; then fail "a failing job exited 0"; fi
[ -z "$(left_behind)" ] || fail "namespaces left behind: $(left_behind)"
echo "== 5. an interrupted job stops every rank and leaves nothing behind"
bash "$pc" run --hosts 2 --name "$name" --timeout 120 -- sleep 97 > "$work/term.txt" 2>&1 &
runner=$!
for _ in $(seq 50); do [ "$(pgrep -c -f '^sleep 97$' || true)" = 2 ] && break; sleep 0.2; done
[ "$(pgrep -c -f '^sleep 97$' || true)" = 2 ] || { cat "$work/term.txt"; fail "ranks did not start"; }
kill -TERM "$runner"
rc=0
wait "$runner" || rc=$?
[ "$rc" = 143 ] || { cat "$work/term.txt"; fail "interrupted run exited $rc, expected 143"; }
[ -z "$(left_behind)" ] || fail "namespaces left behind: $(left_behind)"
[ -z "$(pgrep -f '^sleep 97$' || true)" ] || fail "ranks left running: $(pgrep -a -f '^sleep 97$')"
echo "PASSED"
