#!/usr/bin/env bash
# Gives each rank of an mpirun (or srun) job its own GPU, then runs the program: CUDA_VISIBLE_DEVICES
# becomes the GPU at the rank's index on its host (OMPI_COMM_WORLD_LOCAL_RANK, MPI_LOCALRANKID or
# SLURM_LOCALID), counted modulo the GPUs there, set before the program starts (CUDA reads it once,
# when it initialises). The GPUs are the entries of a CUDA_VISIBLE_DEVICES already set, else the
# UUIDs nvidia-smi lists (unambiguous, whatever CUDA's device order).
#
#   mpirun -np 8 bash scripts/gpu_per_rank.sh build/examples/train_gpt --device cuda --comm nccl ...
#
# More ranks on a host than GPUs: ranks share GPUs (a warning says so; NCCL refuses that, the host
# backends stage through host memory). Exits 2 without a launcher's local rank, 1 without a GPU.
set -euo pipefail
local_rank=${OMPI_COMM_WORLD_LOCAL_RANK:-${MPI_LOCALRANKID:-${SLURM_LOCALID:-}}}
if [ -z "$local_rank" ]; then
  echo "gpu_per_rank.sh: no local rank (OMPI_COMM_WORLD_LOCAL_RANK, MPI_LOCALRANKID or" \
    "SLURM_LOCALID): start it under mpirun or srun" >&2
  exit 2
fi
gpus=()
if [ -n "${CUDA_VISIBLE_DEVICES:-}" ]; then
  IFS=, read -ra gpus <<< "$CUDA_VISIBLE_DEVICES"
elif command -v nvidia-smi > /dev/null; then
  mapfile -t gpus < <(nvidia-smi --query-gpu=uuid --format=csv,noheader 2> /dev/null || true)
fi
if [ ${#gpus[@]} -eq 0 ]; then
  echo "gpu_per_rank.sh: no GPU on this host (CUDA_VISIBLE_DEVICES is empty and nvidia-smi lists" \
    "none)" >&2
  exit 1
fi
local_size=${OMPI_COMM_WORLD_LOCAL_SIZE:-${MPI_LOCALNRANKS:-${SLURM_NTASKS_PER_NODE:-0}}}
if [ "$local_rank" = 0 ] && [ "$local_size" -gt ${#gpus[@]} ] 2> /dev/null; then
  echo "gpu_per_rank.sh: $local_size ranks on this host share ${#gpus[@]} GPU(s)" >&2
fi
export CUDA_VISIBLE_DEVICES=${gpus[$((local_rank % ${#gpus[@]}))]}
exec "$@"
