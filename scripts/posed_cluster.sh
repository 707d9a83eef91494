#!/usr/bin/env bash
# A constrained cluster posed on one machine: N "hosts" (network namespaces) joined by veth links
# to a switch (a bridge in a namespace of its own), each link rate-limited in both directions by
# the kernel's token-bucket filter (tbf), and mpirun jobs launched across them. Open MPI starts
# one daemon per posed host through scripts/posed_cluster_agent.sh (its "ssh"), so MPI, and loom's
# hierarchical backends with it, see every namespace as a separate host: ranks on different posed
# hosts talk TCP over the rate-limited links, never shared memory. Needs root (CAP_NET_ADMIN).
#
#   scripts/posed_cluster.sh run [--hosts 2] [--ranks_per_host 1] [--rate 1gbit] [--name loompc]
#                                [--timeout 600] [--cores split|shared] -- PROGRAM [ARGS...]
#       sets the cluster up, runs PROGRAM under mpirun on hosts × ranks_per_host ranks, tears
#       the cluster down (also when the job fails or is interrupted) and exits with the job's
#       status. Every LOOM_* variable and OMP_NUM_THREADS reach the ranks.
#       --cores split (the default) gives each posed host its own cores, as real hosts have: the
#       machine's cores in equal consecutive parts (host i of N gets cores [i·C/N, (i+1)·C/N)),
#       every process of the host (its ranks, their threads, its Open MPI daemon) bound to them, so
#       the network stack's work for a host's traffic mostly lands on that host's cores. With
#       fewer cores than hosts, or --cores shared, every process may use every core.
#   scripts/posed_cluster.sh up [--hosts 2] [--rate 1gbit] [--name loompc]
#   scripts/posed_cluster.sh down [--name loompc]
#   scripts/posed_cluster.sh check        exit 0 if namespaces can be made here, else 77 and why
#
# --rate is per link and direction, in tc's units (100mbit, 1gbit, 10gbit) or "unlimited".
# Addresses (10.231.0.0/24) and interfaces exist only inside the namespaces this script makes
# (<name>-sw, <name>-h0 ... <name>-h<N-1>); `up` first removes whatever a previous run of the
# same name left behind, `down` removes everything of that name and is safe to repeat.
set -euo pipefail

readonly SUBNET=10.231.0
readonly HERE="$(cd "$(dirname "$0")" && pwd)"

die() { echo "posed_cluster.sh: $*" >&2; exit 2; }

hosts=2 ranks_per_host=1 rate=1gbit name=loompc timeout_s=600 cores=split
cmd=${1:-}
[ $# -gt 0 ] && shift
program=()
while [ $# -gt 0 ]; do
  case "$1" in
    --hosts) hosts=$2; shift 2 ;;
    --ranks_per_host) ranks_per_host=$2; shift 2 ;;
    --rate) rate=$2; shift 2 ;;
    --name) name=$2; shift 2 ;;
    --timeout) timeout_s=$2; shift 2 ;;
    --cores) cores=$2; shift 2 ;;
    --) shift; program=("$@"); break ;;
    *) die "unknown argument '$1' (see the header of $0)" ;;
  esac
done
[[ "$hosts" =~ ^[0-9]+$ && "$hosts" -ge 1 && "$hosts" -le 64 ]] || die "--hosts must be 1..64, got '$hosts'"
[[ "$ranks_per_host" =~ ^[0-9]+$ && "$ranks_per_host" -ge 1 ]] ||
  die "--ranks_per_host must be >= 1, got '$ranks_per_host'"
[[ "$name" =~ ^[a-z][a-z0-9]{0,11}$ ]] || die "--name must be 1-12 lower-case letters/digits, got '$name'"
[[ "$rate" == unlimited || "$rate" =~ ^[0-9]+(\.[0-9]+)?(kbit|mbit|gbit)$ ]] ||
  die "--rate must look like 100mbit, 1gbit, 10gbit or be 'unlimited', got '$rate'"
[[ "$cores" == split || "$cores" == shared ]] || die "--cores must be split or shared, got '$cores'"

ns_host() { echo "$name-h$1"; }
ns_switch() { echo "$name-sw"; }
addr() { echo "$SUBNET.$(($1 + 1))"; }

# The cores of every posed host, one taskset list per host separated by spaces ("0-0 1-1" for 2
# hosts on 2 cores), or nothing where the hosts share every core (--cores shared, or fewer cores
# than hosts).
host_cores() {
  local total i
  total=$(nproc)
  [ "$cores" = split ] && [ "$total" -ge "$hosts" ] || return 0
  for ((i = 0; i < hosts; i++)); do
    printf '%s-%s ' $((i * total / hosts)) $(((i + 1) * total / hosts - 1))
  done
}

# Whether this machine lets us make network namespaces (root, CAP_NET_ADMIN, not refused by a
# container runtime). Prints the reason when not.
check() {
  command -v ip > /dev/null || { echo "the 'ip' tool (iproute2) is missing"; return 1; }
  command -v tc > /dev/null || { echo "the 'tc' tool (iproute2) is missing"; return 1; }
  local probe="$name-probe" err
  ip netns del "$probe" 2> /dev/null || true
  if ! err=$(ip netns add "$probe" 2>&1); then
    echo "cannot create a network namespace: $err"
    return 1
  fi
  if ! err=$(ip netns exec "$probe" ip link add name va type veth peer name vb 2>&1); then
    ip netns del "$probe"
    echo "cannot create veth links: $err"
    return 1
  fi
  ip netns del "$probe"
}

# Removes this cluster's namespaces, first stopping any process still inside one (a rank whose
# daemon died with the job), so nothing of the cluster outlives it.
down() {
  local ns pids
  for ns in $(ip netns list 2> /dev/null | awk '{print $1}'); do
    case "$ns" in "$name"-sw | "$name"-h[0-9]*) ;; *) continue ;; esac
    pids=$(ip netns pids "$ns" 2> /dev/null || true)
    if [ -n "$pids" ]; then
      echo "posed_cluster.sh: stopping $(echo $pids | wc -w) process(es) left in $ns" >&2
      kill -TERM $pids 2> /dev/null || true
      sleep 1
      kill -KILL $(ip netns pids "$ns" 2> /dev/null) 2> /dev/null || true
    fi
    ip netns del "$ns"
  done
}

# tbf on `dev` in namespace `ns`: `rate` with a burst of about 2 ms of it (at least 64 KiB, so a
# full GSO segment passes) and up to 5 ms of queue (a shallow-buffered switch port).
limit_link() {
  local ns=$1 dev=$2
  [ "$rate" = unlimited ] && return 0
  local bytes_per_s
  bytes_per_s=$(awk -v r="$rate" 'BEGIN {
    n = r + 0; u = substr(r, length(n "") + 1);
    m = (u == "kbit") ? 1e3 : (u == "mbit") ? 1e6 : 1e9; print int(n * m / 8) }')
  local burst=$((bytes_per_s / 500))
  [ "$burst" -lt 65536 ] && burst=65536
  ip netns exec "$ns" tc qdisc add dev "$dev" root tbf rate "$rate" burst "$burst" latency 5ms
}

up() {
  down
  local sw i h
  sw=$(ns_switch)
  ip netns add "$sw"
  ip netns exec "$sw" ip link set lo up
  ip netns exec "$sw" ip link add br0 type bridge
  ip netns exec "$sw" ip link set br0 up
  for ((i = 0; i < hosts; i++)); do
    h=$(ns_host "$i")
    ip netns add "$h"
    ip netns exec "$h" ip link set lo up
    # Created inside the switch namespace, then one end moved to the host: no interface ever
    # appears in the namespace this script runs in.
    ip netns exec "$sw" ip link add name "p$i" type veth peer name eth0
    ip netns exec "$sw" ip link set eth0 netns "$h"
    ip netns exec "$sw" ip link set "p$i" master br0 up
    ip netns exec "$h" ip addr add "$(addr "$i")/24" dev eth0
    ip netns exec "$h" ip link set eth0 up
    limit_link "$h" eth0      # host -> switch
    limit_link "$sw" "p$i"    # switch -> host
  done
  echo "posed cluster '$name': $hosts hosts ($SUBNET.1-$hosts), links $rate each way"
}

run() {
  [ ${#program[@]} -gt 0 ] || die "run needs a program after --"
  trap down EXIT
  up
  local host_list="" i
  for ((i = 0; i < hosts; i++)); do host_list+="${host_list:+,}$(addr "$i"):$ranks_per_host"; done
  local exports=() v bind=()
  LOOM_POSED_HOST_CORES=$(host_cores)
  if [ -n "$LOOM_POSED_HOST_CORES" ]; then
    local host0_cores=($LOOM_POSED_HOST_CORES)
    bind=(taskset -c "${host0_cores[0]}")
    echo "posed cluster '$name': host cores ${LOOM_POSED_HOST_CORES% }"
  elif [ "$cores" = split ]; then
    echo "posed_cluster.sh: $(nproc) cores for $hosts hosts: the hosts share every core" >&2
  fi
  export LOOM_POSED_HOST_CORES
  for v in $(compgen -e); do
    case "$v" in LOOM_* | OMP_NUM_THREADS) exports+=(-x "$v") ;; esac
  done
  # mpirun runs in host 0's namespace; the agent starts the daemon of every other posed host in
  # that host's namespace. Each posed host has its own hostname (a UTS namespace), as Open MPI
  # names its session directory and shared-memory segments after the host. Open MPI binds
  # nothing (each daemon believes it has the machine to itself): a posed host's processes inherit
  # its cores from the daemon (--cores), host 0's from mpirun. TCP only on the posed links.
  LOOM_POSED_CLUSTER="$name" LOOM_POSED_SUBNET="$SUBNET" \
    ip netns exec "$(ns_host 0)" unshare --uts /bin/sh -c 'hostname "$0" && exec "$@"' \
    "$(ns_host 0)" "${bind[@]}" timeout "$timeout_s" mpirun --allow-run-as-root --oversubscribe --bind-to none \
    -np $((hosts * ranks_per_host)) --host "$host_list" \
    --mca plm_rsh_agent "$HERE/posed_cluster_agent.sh" \
    --mca btl tcp,self,vader --mca btl_tcp_if_include eth0 --mca oob_tcp_if_include eth0 \
    "${exports[@]}" "${program[@]}" &
  # In the background so that an interrupt reaches this script at once: it stops the job (timeout
  # passes the signal on to mpirun, which stops every rank), then the EXIT trap tears down.
  local job=$!
  trap 'kill -TERM $job 2> /dev/null; wait $job || true; exit 130' INT
  trap 'kill -TERM $job 2> /dev/null; wait $job || true; exit 143' TERM
  local status=0
  wait $job || status=$?
  return $status
}

case "$cmd" in
  check)
    if reason=$(check); then exit 0; fi
    echo "posed_cluster.sh: namespaces unavailable here: $reason" >&2
    exit 77
    ;;
  up) up ;;
  down) down ;;
  run) run ;;
  *) die "usage: $0 run|up|down|check [flags] [-- program args] (see the header)" ;;
esac
