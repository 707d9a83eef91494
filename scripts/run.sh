#!/usr/bin/env bash
# The README's main-job command. Until training lands (issues #3 and #5) the main job is the kernel
# benchmark: loom's GEMM side by side with a direct cblas_sgemm call, attention, LayerNorm, AdamW.
# Extra arguments go to the benchmark binary (e.g. --benchmark_filter=Matmul).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/build.sh
BUILD_DIR="${LOOM_BUILD_DIR:-build}"
"$BUILD_DIR/bench/kernels_bench" --benchmark_min_time=0.2 "$@"
