#!/usr/bin/env bash
# The prepared GPU check (issue #14, docs/gpu.md): on a machine with an NVIDIA GPU, builds loom in
# Release with the CUDA backend into build-gpu/ (or $LOOM_BUILD_DIR) and runs every gpu-labelled
# test (the CUDA kernels against their CPU twins, a small GPT against the CPU) and 20 steps of
# gpt2-124m bf16 training on the GPU (tokens/s, MFU, device memory; with each attention kernel),
# tiny-moe on the GPU against the CPU, dp = 2 on the one GPU against one rank, one rank over the
# real NCCL against the local one, and coll_bench on device buffers (2 ranks sharing the GPU over
# loom's staged path; one rank over NCCL), writing one report with the date, the GPU and each
# part's output. Exits non-zero if there is no GPU or a check fails (the report says which).
#
#   bash scripts/gpu_check.sh [--out DIR]    # report: DIR/gpu_check.md (default out/gpu_check;
#                                            # $OUT when set, as on the device machine)
#   bash scripts/gpu_check.sh --bundle .gpu_bundle/loom-gpu.tar.xz
#       on a machine without loom's libraries (the lent GPU machine): the binaries prebuilt by
#       scripts/gpu_bundle.sh, Open MPI's runtime (mpirun) included
set -euo pipefail
cd "$(dirname "$0")/.."
out=${OUT:-out/gpu_check}
bundle=""
while [ $# -gt 0 ]; do
  case "$1" in
    --out) out=$2; shift 2 ;;
    --bundle) bundle=$2; shift 2 ;;
    *) echo "gpu_check.sh: unknown argument '$1'" >&2; exit 2 ;;
  esac
done
if [ -n "$bundle" ] && [ ! -f "$bundle" ]; then
  echo "gpu_check.sh: no bundle at $bundle (make it with scripts/gpu_bundle.sh)" >&2
  exit 2
fi
mkdir -p "$out"
report="$out/gpu_check.md"
build=${LOOM_BUILD_DIR:-build-gpu}
start=$(date +%s)
if ! command -v nvidia-smi > /dev/null; then
  echo "gpu_check.sh: no nvidia-smi on this machine: no NVIDIA driver, nothing to check" |
    tee "$report" >&2
  exit 1
fi
if ! gpu=$(nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>&1); then
  echo "gpu_check.sh: no usable NVIDIA GPU (nvidia-smi: $gpu)" | tee "$report" >&2
  exit 1
fi
{
  echo "# loom GPU check, $(date -u +%Y-%m-%dT%H:%MZ)"
  echo
  echo "- GPU: $gpu"
  echo "- CPU: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //')"
  echo "- nvcc: $(nvcc --version | tail -1)"
  echo "- commit: $(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
  echo
} > "$report"
status=0
if [ -n "$bundle" ]; then
  # Prebuilt (scripts/gpu_bundle.sh): loom's own libraries in the bundle, CUDA's from this
  # machine (its toolkit, or the nvidia-* pip wheels beside PyTorch).
  build=$(mktemp -d)
  tar -C "$build" -xJf "$bundle"
  build=$build/loom
  wheels=$(python3 -c 'import nvidia, os; print(":".join(os.path.join(p, d, "lib") for p in nvidia.__path__ for d in sorted(os.listdir(p)) if os.path.isdir(os.path.join(p, d, "lib"))))' 2> /dev/null || true)
  export LD_LIBRARY_PATH="$build/lib:${wheels}:/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}"
  # The bundle's Open MPI (mpirun must match the bundled libmpi), relocated into the bundle; the
  # settings of Debian's /etc/openmpi/openmpi-mca-params.conf, which does not travel, as env.
  export OPAL_PREFIX="$build/mpi" PATH="$build/mpi/bin:$PATH" \
    PMIX_MCA_mca_base_component_path="$build/mpi/lib/x86_64-linux-gnu/pmix2/lib/pmix" \
    OMPI_MCA_btl_base_warn_component_unused=0 OMPI_MCA_mtl='^ofi' \
    OMPI_MCA_btl='^uct,openib,ofi' OMPI_MCA_pml='^ucx' OMPI_MCA_osc='^ucx,pt2pt'
  { echo "- bundle: $(cat "$build/BUNDLE" | tr '\n' ' '); this machine's $(ldd --version 2>&1 | sed -n 1p)"; echo; } >> "$report"
  echo "[gpu_check] gpu tests from the bundle"
  for t in cuda_launch_test cuda_kernels_test gpt_cuda_test nccl_gpu_test; do
    echo "== $t" >> "$out/ctest_gpu.log"
    # Bounded: a lent machine's minutes are few, and a hang must not take them all.
    timeout 180 "$build/tests/$t" >> "$out/ctest_gpu.log" 2>&1 ||
      { rc=$?; status=1; echo "$t FAILED (exit $rc)" >> "$out/ctest_gpu.log"; }
  done
else
  echo "[gpu_check] building $build (Release, CUDA on)"
  if ! cmake -S . -B "$build" -DCMAKE_BUILD_TYPE=Release -DLOOM_CUDA=ON > "$out/configure.log" 2>&1 ||
     ! cmake --build "$build" -j "$(nproc)" > "$out/build.log" 2>&1; then
    { echo "**build failed** (on a machine without loom's libraries use --bundle: scripts/gpu_bundle.sh); the last lines:"; echo '```'; tail -30 "$out/build.log" "$out/configure.log" 2>/dev/null; echo '```'; } >> "$report"
    echo "[gpu_check] build failed: $report" >&2
    exit 1
  fi
  grep -q "CUDA backend: on" "$out/configure.log" ||
    { echo "**CUDA backend not built** (see configure.log)" >> "$report"; exit 1; }
  echo "[gpu_check] gpu-labelled tests"
  ctest --test-dir "$build" -L gpu --output-on-failure -V > "$out/ctest_gpu.log" 2>&1 || status=1
fi
# Tests that ran and tests that skipped (each a "[ RUN ]" line; a skip also prints "[ SKIPPED ]"
# with its time): on a GPU machine none may skip, or the check did not check it.
ran=$(grep -c '^\[ RUN      \]' "$out/ctest_gpu.log" || true)
skipped=$(grep -cE '^\[  SKIPPED \] .* \([0-9]+ ms\)' "$out/ctest_gpu.log" || true)
[ "$skipped" = 0 ] || status=1
{
  echo "## gpu-labelled tests ($([ $status = 0 ] && echo passed || echo FAILED): $((ran - skipped)) ran, $skipped skipped)"
  echo '```'
  grep -E "CUDA device:|\[ +(OK|FAILED|SKIPPED) +\]|tests passed|tests failed| FAILED( \(exit [0-9]+\))?$|error while loading" "$out/ctest_gpu.log" || true
  echo '```'
  echo
} >> "$report"
# gpt2-124m on one GPU: bf16 (f32 master weights), 8 sequences of 1024 random tokens per step;
# with each attention kernel (the probabilities form, the default, and the flash form).
gpt2=(--device cuda --preset gpt2-124m --data random --precision bf16 --batch 8 --steps 20
  --lr 3e-4 --warmup_steps 5)
echo "[gpu_check] gpt2-124m training on the GPU"
train_status=0
timeout 180 "$build/examples/train_gpt" "${gpt2[@]}" \
  --metrics_out "$out/gpt2_124m.jsonl" > "$out/gpt2_124m.log" 2>&1 || train_status=$?
[ $train_status = 0 ] || status=1
echo "[gpu_check] gpt2-124m training on the GPU, flash attention"
flash_status=0
timeout 180 "$build/examples/train_gpt" "${gpt2[@]}" --attention flash \
  --metrics_out "$out/gpt2_124m_flash.jsonl" > "$out/gpt2_124m_flash.log" 2>&1 || flash_status=$?
# Two runs that must give the same losses: compares the metrics files step by step and appends a
# report section (with the last lines of the runs' logs when they failed). compare_runs TITLE
# A.jsonl B.jsonl BOUND RUN_STATUS A.log B.log; returns non-zero if the runs failed, logged no
# losses or differ by more than BOUND.
losses() { grep -o '"loss":[^,}]*' "$1" 2> /dev/null | cut -d: -f2; }
compare_runs() {
  local title=$1 a=$2 b=$3 bound=$4 run_status=$5 worst ok=1
  worst=$(paste <(losses "$a") <(losses "$b") |
    awk 'NF == 2 {d = $1 - $2; if (d < 0) d = -d; if (d > m) m = d; n++}
         END {if (n) printf "%.3g over %d steps", m, n}')
  [ "$run_status" = 0 ] && [ -n "$worst" ] &&
    awk -v w="${worst%% *}" -v b="$bound" 'BEGIN {exit !(w <= b)}' && ok=0
  {
    echo "## $title ($([ $ok = 0 ] && echo "passed" || echo FAILED))"
    echo
    echo "Largest loss difference: ${worst:-none, no losses logged} (bound $bound)."
    echo
    if [ "$run_status" != 0 ]; then
      echo "A run failed (exit $run_status); the last lines of its log:"
      echo '```'
      tail -n 6 "$6" "$7" 2> /dev/null
      echo '```'
      echo
    fi
  } >> "$report"
  return $ok
}
tiny=(--device cuda --preset tiny --steps 20 --batch 8 --seq_len 32 --lr 3e-3)
echo "[gpu_check] tiny on one rank"
one_status=0
timeout 120 "$build/examples/train_gpt" "${tiny[@]}" --metrics_out "$out/tiny_1.jsonl" \
  > "$out/tiny_1.log" 2>&1 || one_status=$?
# A mixture-of-experts model on the GPU (the routing on the host, the token rows and experts on
# the device) against the same run on the CPU: the router's logits differ in their last bits, so
# a token whose top-k is a near tie may choose another expert; hence the looser bound.
echo "[gpu_check] tiny-moe on the GPU against the CPU"
moe=(--preset tiny-moe --steps 20 --batch 8 --seq_len 32 --lr 3e-3)
moe_status=0
{ timeout 120 "$build/examples/train_gpt" "${moe[@]}" --device cuda \
    --metrics_out "$out/moe_gpu.jsonl" > "$out/moe_gpu.log" 2>&1 &&
  timeout 120 "$build/examples/train_gpt" "${moe[@]}" --device cpu \
    --metrics_out "$out/moe_cpu.jsonl" > "$out/moe_cpu.log" 2>&1; } || moe_status=$?
compare_runs "tiny-moe on the GPU vs the CPU, fp32, 20 steps" "$out/moe_cpu.jsonl" \
  "$out/moe_gpu.jsonl" 2e-2 $moe_status "$out/moe_cpu.log" "$out/moe_gpu.log" || status=1
# dp = 2 on the one GPU (ranks share it; collectives staged through the host) against one rank:
# the same global batch, so the same losses up to the order of the gradient sums.
if command -v mpirun > /dev/null; then
  echo "[gpu_check] dp 2 on one GPU against one rank"
  dp_status=$one_status
  timeout 180 mpirun --allow-run-as-root --oversubscribe -np 2 "$build/examples/train_gpt" \
    "${tiny[@]}" --metrics_out "$out/tiny_dp2.jsonl" > "$out/tiny_dp2.log" 2>&1 || dp_status=$?
  compare_runs "dp 2 on one GPU vs one rank, tiny fp32, 20 steps" "$out/tiny_1.jsonl" \
    "$out/tiny_dp2.jsonl" 1e-4 $dp_status "$out/tiny_1.log" "$out/tiny_dp2.log" || status=1
else
  echo "## dp 2 on one GPU: skipped (no mpirun on this machine)" >> "$report"
fi
# One rank over the real NCCL (--comm nccl; more ranks need a GPU each) against the local one.
# Its bootstrap is MPI (a singleton MPI_Init: Open MPI's runtime, from the bundle there).
if command -v mpirun > /dev/null; then
  echo "[gpu_check] tiny on one rank over NCCL"
  nccl_status=$one_status
  timeout 120 "$build/examples/train_gpt" "${tiny[@]}" --comm nccl \
    --metrics_out "$out/tiny_nccl.jsonl" > "$out/tiny_nccl.log" 2>&1 || nccl_status=$?
  compare_runs "one rank over NCCL vs the local one rank, tiny fp32, 20 steps" \
    "$out/tiny_1.jsonl" "$out/tiny_nccl.jsonl" 1e-6 $nccl_status "$out/tiny_1.log" \
    "$out/tiny_nccl.log" || status=1
else
  echo "## one rank over NCCL: skipped (no Open MPI runtime here; nccl_gpu_test ran NCCL)" >> "$report"
fi
# coll_bench on device buffers: loom's path with 2 ranks sharing the GPU (staged through host
# memory: shm and mpi), and NCCL on the one rank a one-GPU machine allows, beside shm there.
coll_status=0
if command -v mpirun > /dev/null; then
  echo "[gpu_check] coll_bench on device buffers"
  coll=(--op allreduce --min_bytes 1K --max_bytes 64M --cycles 3 --device cuda)
  { timeout 240 mpirun --allow-run-as-root --oversubscribe -np 2 "$build/bench/coll_bench" \
      "${coll[@]}" --backends shm,mpi &&
    timeout 120 mpirun --allow-run-as-root -np 1 "$build/bench/coll_bench" "${coll[@]}" \
      --backends nccl,shm; } > "$out/coll_bench.log" 2>&1 || coll_status=$?
  {
    echo "## coll_bench allreduce on device buffers: 2 ranks sharing the GPU (loom's staged path), 1 rank over NCCL ($([ $coll_status = 0 ] && echo ran || echo "FAILED, exit $coll_status"))"
    echo
    echo '```'
    grep -vE "^\[|^-+$|^ *$" "$out/coll_bench.log" | tail -80
    echo '```'
    echo
  } >> "$report"
else
  echo "## coll_bench: skipped (no mpirun on this machine)" >> "$report"
fi
[ $coll_status = 0 ] || status=1
# Where the device time of a step goes: 6 steps with each top-level kernel entry point timed by
# events (LOOM_CUDA_PROFILE=1; the table train_gpt prints at the end).
echo "[gpu_check] gpt2-124m, device time by kernel entry point"
LOOM_CUDA_PROFILE=1 timeout 120 "$build/examples/train_gpt" "${gpt2[@]}" \
  --steps 6 > "$out/gpt2_124m_profile.log" 2>&1 || status=1
# The flash form computes the same model (f32 arithmetic on the same bf16 operands, no rounding
# of the probabilities): the losses stay within bf16's noise of the default's.
[ $train_status = 0 ] || flash_status=$train_status
compare_runs "gpt2-124m with flash attention vs the probabilities form, bf16, 20 steps" \
  "$out/gpt2_124m.jsonl" "$out/gpt2_124m_flash.jsonl" 2e-2 $flash_status "$out/gpt2_124m.log" \
  "$out/gpt2_124m_flash.log" || status=1
for run in gpt2_124m gpt2_124m_flash; do
  {
    echo "## $run, bf16, B 8 x T 1024, 20 steps"
    echo
    echo "\`train_gpt ${gpt2[*]}$([ $run = gpt2_124m_flash ] && echo " --attention flash")\`"
    echo '```'
    grep -E "^model|^peak|^step +(1|5|10|15|20)/|memory now|train_gpt:" "$out/$run.log" ||
      tail -20 "$out/$run.log"
    echo '```'
    echo
  } >> "$report"
done
{
  echo "## gpt2-124m: device time by kernel entry point (6 steps, LOOM_CUDA_PROFILE=1)"
  echo '```'
  grep -q "device time by kernel entry point" "$out/gpt2_124m_profile.log" &&
    sed -n '/device time by kernel entry point/,$p' "$out/gpt2_124m_profile.log" | head -40 ||
    tail -5 "$out/gpt2_124m_profile.log"
  echo '```'
  echo
} >> "$report"
echo "Took $(( $(date +%s) - start )) s." >> "$report"
echo "[gpu_check] report: $report"
exit $status
