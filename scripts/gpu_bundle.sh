#!/usr/bin/env bash
# Builds, on this machine, what scripts/gpu_check.sh runs on a lent GPU machine whose image has
# the CUDA toolkit but none of loom's libraries (Abseil, Open MPI, oneDNN, OpenBLAS, ...; nothing
# can be fetched there, and a call carries at most 64 MiB): the gpu tests, train_gpt and
# coll_bench, Release, for the GPU's architecture only, stripped, with the shared libraries they
# load besides glibc's and CUDA's (which the GPU machine's CUDA and pip wheels provide) and Open
# MPI's runtime (mpirun, orted, its plugins and help files under loom/mpi/, relocated there by
# OPAL_PREFIX: MPI_Init fails without the plugins), packed as .gpu_bundle/loom-gpu.tar.xz (about
# 20 MB; .gpu_bundle/ is git-ignored, so it travels only when a device call names it in `carry`):
#
#   bash scripts/gpu_bundle.sh                  # LOOM_CUDA_ARCH=90 (H100 / H200) by default
#   # device call: carry [".gpu_bundle"], command
#   #   bash scripts/gpu_check.sh --bundle .gpu_bundle/loom-gpu.tar.xz
#
# The binaries need the GPU machine's glibc to be at least this one's (ldd --version below).
set -euo pipefail
cd "$(dirname "$0")/.."
arch=${LOOM_CUDA_ARCH:-90}
build=${LOOM_BUNDLE_BUILD_DIR:-build-bundle}
dest=.gpu_bundle
targets=(cuda_launch_test cuda_kernels_test gpt_cuda_test nccl_gpu_test train_gpt coll_bench)
echo "[gpu_bundle] building ${targets[*]} (Release, sm_$arch) in $build"
mkdir -p "$build"
cmake -S . -B "$build" -DCMAKE_BUILD_TYPE=Release -DLOOM_CUDA=ON \
  -DCMAKE_CUDA_ARCHITECTURES="$arch" > "$build/configure.log" 2>&1 ||
  { tail -20 "$build/configure.log" >&2; exit 1; }
grep -q "CUDA backend: on" "$build/configure.log" ||
  { echo "gpu_bundle.sh: the CUDA backend is off here (no nvcc?)" >&2; exit 1; }
cmake --build "$build" -j "$(nproc)" --target "${targets[@]}"
stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
mkdir -p "$stage/loom/tests" "$stage/loom/examples" "$stage/loom/bench" "$stage/loom/lib"
for t in "${targets[@]}"; do
  case "$t" in
    train_gpt) dir=examples ;;
    coll_bench) dir=bench ;;
    *) dir=tests ;;
  esac
  cp "$build/$dir/$t" "$stage/loom/$dir/$t"
  strip --strip-unneeded "$stage/loom/$dir/$t"
done
# Open MPI's runtime in the layout of its Debian prefix (/usr -> loom/mpi): OPAL_PREFIX relocates
# every path but the system configuration (/etc/openmpi, whose settings gpu_check.sh passes as
# OMPI_MCA_* instead); PMIx's plugins by PMIX_MCA_mca_base_component_path. The fabric plugins
# (UCX, OFI, PSM, verbs) are left out: one host needs only shared memory, TCP and self.
mpi_lib=/usr/lib/x86_64-linux-gnu
mpi=$stage/loom/mpi
mkdir -p "$mpi/bin" "$mpi/share" "$mpi/lib/x86_64-linux-gnu/openmpi/lib/openmpi3" \
  "$mpi/lib/x86_64-linux-gnu/pmix2/lib/pmix" "$mpi/lib/x86_64-linux-gnu/pmix2/share"
cp -L "$(readlink -f "$(command -v mpirun)")" "$mpi/bin/mpirun"
cp -L "$(command -v orted)" "$mpi/bin/orted"
find "$mpi_lib/openmpi/lib/openmpi3" -name 'mca_*.so' |
  grep -vE 'mca_[a-z]+_(ucx|uct|ofi|psm2?|openib)\.so$' |
  xargs cp -t "$mpi/lib/x86_64-linux-gnu/openmpi/lib/openmpi3"
cp "$mpi_lib"/pmix2/lib/pmix/*.so "$mpi/lib/x86_64-linux-gnu/pmix2/lib/pmix/"
cp -r "$mpi_lib/pmix2/share/pmix" "$mpi/lib/x86_64-linux-gnu/pmix2/share/"
cp -r /usr/share/openmpi "$mpi/share/"
# Every shared library they load but glibc's and CUDA's (libcudart, cuBLAS, NCCL, the driver).
find "$stage/loom" -type f \( -perm -u+x -o -name '*.so' \) -not -path '*/lib/lib*' |
  while read -r f; do ldd "$f" 2> /dev/null || true; done | awk '$3 ~ /^\// {print $3}' | sort -u |
  grep -vE '/(libc|libm|libpthread|libdl|librt|ld-linux[^/]*)\.so|/libcuda\.so|/libcudart\.so|/libcublas(Lt)?\.so|/libnccl\.so' |
  while read -r lib; do cp -L "$lib" "$stage/loom/lib/"; done
glibc=$(ldd --version 2>&1 | sed -n 1p)
{
  echo "built $(date -u +%Y-%m-%dT%H:%MZ) from $(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
  echo "sm_$arch; $glibc; nvcc $(nvcc --version | tail -1)"
} > "$stage/loom/BUNDLE"
mkdir -p "$dest"
tar -C "$stage" -cJf "$dest/loom-gpu.tar.xz" loom
echo "[gpu_bundle] $dest/loom-gpu.tar.xz: $(du -h "$dest/loom-gpu.tar.xz" | cut -f1)," \
  "$(ls "$stage/loom/lib" | wc -l) libraries, Open MPI's runtime; needs $glibc or newer there"
