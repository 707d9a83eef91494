#!/usr/bin/env bash
# scripts/gpu_per_rank.sh without a GPU: the local rank picks its entry of CUDA_VISIBLE_DEVICES
# (wrapping around), the program runs with it, a shared host is reported, and a missing local rank
# or GPU fails with its message and exit code.
set -uo pipefail
script="$(dirname "$0")/../../scripts/gpu_per_rank.sh"
failures=0
expect() {  # expect NAME WANT GOT
  if [ "$2" != "$3" ]; then
    echo "FAILED $1: want '$2', got '$3'"
    failures=$((failures + 1))
  else
    echo "ok $1"
  fi
}
show='printf %s "$CUDA_VISIBLE_DEVICES"'
expect "rank 1 of 3,5" 5 "$(env -u MPI_LOCALRANKID -u SLURM_LOCALID OMPI_COMM_WORLD_LOCAL_RANK=1 \
  CUDA_VISIBLE_DEVICES=3,5 bash "$script" bash -c "$show")"
expect "rank 2 wraps to 3" 3 "$(env -u MPI_LOCALRANKID -u SLURM_LOCALID OMPI_COMM_WORLD_LOCAL_RANK=2 \
  CUDA_VISIBLE_DEVICES=3,5 bash "$script" bash -c "$show")"
expect "slurm's local id" GPU-b "$(env -u OMPI_COMM_WORLD_LOCAL_RANK -u MPI_LOCALRANKID SLURM_LOCALID=1 \
  CUDA_VISIBLE_DEVICES=GPU-a,GPU-b bash "$script" bash -c "$show")"
shared=$(env -u MPI_LOCALRANKID -u SLURM_LOCALID OMPI_COMM_WORLD_LOCAL_RANK=0 \
  OMPI_COMM_WORLD_LOCAL_SIZE=4 CUDA_VISIBLE_DEVICES=0,1 bash "$script" true 2>&1)
expect "shared GPUs reported" "gpu_per_rank.sh: 4 ranks on this host share 2 GPU(s)" "$shared"
out=$(env -u OMPI_COMM_WORLD_LOCAL_RANK -u MPI_LOCALRANKID -u SLURM_LOCALID bash "$script" true 2>&1)
expect "no local rank: exit 2" 2 $?
expect "no local rank: message" 1 "$(grep -c 'start it under mpirun or srun' <<< "$out")"
out=$(env -u MPI_LOCALRANKID -u SLURM_LOCALID OMPI_COMM_WORLD_LOCAL_RANK=0 CUDA_VISIBLE_DEVICES= \
  PATH=/nonexistent /bin/bash "$script" true 2>&1)
expect "no GPU: exit 1" 1 $?
expect "no GPU: message" 1 "$(grep -c 'no GPU on this host' <<< "$out")"
exit $((failures > 0))
