# Sourced by the side-by-side PyTorch comparisons after they set their defaults (preset, batch,
# steps, threads, rounds, json):
#   source bench/models/side_by_side.sh <script name> "$@"
# Parses the common flags (--preset --batch --steps --threads --rounds --json), checks them, sets
# `python` (bench/models/torch_python.sh), builds loom and sets `build`, `work` (a temporary
# directory removed at exit) and `mpi` (a 2-rank mpirun under a timeout, as root and with fewer
# than 2 cores where needed). Their reports read the runs with bench/models/side_by_side.py.
bench_name=$1
shift
while [ $# -gt 0 ]; do
  case "$1" in
    --preset) preset=$2; shift 2 ;;
    --batch) batch=$2; shift 2 ;;
    --steps) steps=$2; shift 2 ;;
    --threads) threads=$2; shift 2 ;;
    --rounds) rounds=$2; shift 2 ;;
    --json) json=$2; shift 2 ;;
    *) echo "$bench_name: unknown argument '$1'" >&2; exit 2 ;;
  esac
done
if [ "$steps" -lt 3 ]; then echo "$bench_name: --steps must be >= 3" >&2; exit 2; fi

source bench/models/torch_python.sh "$bench_name"

bash scripts/build.sh >/dev/null
build=${LOOM_BUILD_DIR:-build}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mpi=(timeout 900 mpirun -np 2)
if [ "$(id -u)" = 0 ]; then mpi+=(--allow-run-as-root); fi
if [ "$(nproc)" -lt 2 ]; then mpi+=(--oversubscribe); fi
