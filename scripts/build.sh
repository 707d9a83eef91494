#!/usr/bin/env bash
# Installs dependencies (scripts/setup.sh) and builds loom in Release into build/ (or $LOOM_BUILD_DIR).
# Used by scripts/test.sh and scripts/run.sh; safe to run repeatedly (incremental).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
BUILD_DIR="${LOOM_BUILD_DIR:-build}"
JOBS="${LOOM_JOBS:-$(nproc)}"
cmake -S . -B "$BUILD_DIR" -DCMAKE_BUILD_TYPE=Release "$@"
cmake --build "$BUILD_DIR" -j "$JOBS"
