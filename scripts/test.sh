#!/usr/bin/env bash
# The README's test command: installs what is missing, builds, and runs every test with ctest.
# Extra arguments go to ctest (e.g. `bash scripts/test.sh -L unit` or `-R kernels`).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/build.sh
BUILD_DIR="${LOOM_BUILD_DIR:-build}"
ctest --test-dir "$BUILD_DIR" --output-on-failure "$@"
