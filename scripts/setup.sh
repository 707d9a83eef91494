#!/usr/bin/env bash
# Installs every Debian package loom needs to build, test and benchmark. Idempotent: when all
# packages are present it only runs dpkg-query and returns in well under a second.
#   bash scripts/setup.sh               # build + test dependencies
#   bash scripts/setup.sh --with-torch  # also Debian's python3-torch, for the PyTorch comparisons
#                                       # (the parity test then runs live instead of on its fixture)
set -euo pipefail

PACKAGES=(
  build-essential cmake pkg-config clang-format
  libabsl-dev libgtest-dev libgmock-dev libbenchmark-dev
  libopenmpi-dev openmpi-bin
  libopenblas-dev libdnnl-dev libblis-dev
  nlohmann-json3-dev
  iproute2 python3
)

for arg in "$@"; do
  case "$arg" in
    --with-torch) PACKAGES+=(python3-torch python3-numpy) ;;
    *) echo "setup.sh: unknown argument '$arg' (only --with-torch)" >&2; exit 2 ;;
  esac
done

missing=()
for p in "${PACKAGES[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done

if [ ${#missing[@]} -eq 0 ]; then
  echo "[setup] all ${#PACKAGES[@]} packages present"
  exit 0
fi

echo "[setup] installing: ${missing[*]}"
SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
echo "[setup] done"
