#!/usr/bin/env bash
# Open MPI's remote shell for scripts/posed_cluster.sh (mpirun --mca plm_rsh_agent): called as
# `posed_cluster_agent.sh HOST COMMAND...` like ssh, it runs COMMAND in the network namespace of
# the posed host whose address is HOST (10.231.0.K -> <cluster>-h<K-1>).
set -euo pipefail
cluster=${LOOM_POSED_CLUSTER:?posed_cluster_agent.sh runs only under scripts/posed_cluster.sh}
subnet=${LOOM_POSED_SUBNET:?posed_cluster_agent.sh runs only under scripts/posed_cluster.sh}
host=${1:?usage: posed_cluster_agent.sh HOST COMMAND...}
shift
case "$host" in
  "$subnet".*) index=$((${host##*.} - 1)) ;;
  *) echo "posed_cluster_agent.sh: '$host' is not a posed host of cluster '$cluster'" >&2; exit 255 ;;
esac
# Bound to the posed host's own cores where posed_cluster.sh gave it some (--cores split): the
# daemon's ranks inherit them.
bind=()
read -r -a host_cores <<< "${LOOM_POSED_HOST_CORES:-}"
if [ ${#host_cores[@]} -gt 0 ]; then
  [ "$index" -lt ${#host_cores[@]} ] || { echo "posed_cluster_agent.sh: no cores for host $index" >&2; exit 255; }
  bind=(taskset -c "${host_cores[$index]}")
fi
# Its own hostname too (a UTS namespace): Open MPI names its session directory and shared-memory
# segments after the host, and two posed hosts sharing "vm" would collide in /dev/shm.
exec "${bind[@]}" ip netns exec "$cluster-h$index" unshare --uts /bin/sh -c "hostname $cluster-h$index && $*"
