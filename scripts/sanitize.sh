#!/usr/bin/env bash
# Sanitizer builds (issue #13, docs/faults.md): not on the README test path (each build takes
# several minutes on 2 cores and the instrumented tests run 2-10x slower).
#   bash scripts/sanitize.sh asan   # AddressSanitizer + UndefinedBehaviorSanitizer: unit, mpi, fault
#   bash scripts/sanitize.sh tsan   # ThreadSanitizer: the threads-backend comm tests
#   bash scripts/sanitize.sh all    # both
# Builds into build-asan / build-tsan (Release with -fsanitize, no benchmarks); any report fails
# the test that produced it (halt_on_error; UBSan does not recover). Extra arguments go to ctest.
set -euo pipefail
cd "$(dirname "$0")/.."
kind="${1:?usage: sanitize.sh asan|tsan|all [ctest args]}"
shift
if [ "$kind" = all ]; then  # both, one after the other; fails if either finds anything
  bash "$0" asan "$@"
  exec bash "$0" tsan "$@"
fi
case "$kind" in
  asan) flags="address,undefined"; dir=build-asan; tests=(-L "unit|mpi|fault") ;;
  tsan) flags="thread"; dir=build-tsan; tests=(-R "comm_local_test|comm_p2p_algorithms_test|comm_hierarchical_test") ;;
  *) echo "sanitize.sh: unknown kind '$kind' (asan, tsan or all)" >&2; exit 2 ;;
esac
bash scripts/setup.sh
cmake -S . -B "$dir" -DCMAKE_BUILD_TYPE=Release -DLOOM_BUILD_BENCH=OFF -DLOOM_SANITIZE="$flags"
cmake --build "$dir" -j "${LOOM_JOBS:-$(nproc)}"
# Open MPI's own allocations outlive MPI_Finalize by design: leak checking would only report those.
export ASAN_OPTIONS="${ASAN_OPTIONS:-detect_leaks=0:halt_on_error=1:abort_on_error=1}"
export UBSAN_OPTIONS="${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}"
export TSAN_OPTIONS="${TSAN_OPTIONS:-halt_on_error=1:second_deadlock_stack=1}"
ctest --test-dir "$dir" --output-on-failure "${tests[@]}" "$@"
