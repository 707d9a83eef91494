#!/usr/bin/env bash
# The README's test command: installs what is missing, builds, and runs every test with ctest.
# Extra arguments go to ctest instead of the default `-LE matrix` (e.g. `bash scripts/test.sh -L
# unit`, `-R kernels`, or `-L matrix` for the whole equivalence matrix).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/build.sh
BUILD_DIR="${LOOM_BUILD_DIR:-build}"
# Without arguments: every test but the whole equivalence matrix (label `matrix`, about 5 min on
# 2 cores; its slice runs here as equivalence_matrix_slice). `bash scripts/test.sh -L matrix` runs it.
if [ "$#" -eq 0 ]; then set -- -LE matrix; fi
ctest --test-dir "$BUILD_DIR" --output-on-failure "$@"
