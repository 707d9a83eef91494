#!/usr/bin/env bash
# Installs the current PyTorch release from PyPI (pinned) into a virtual environment outside the
# repository and prints its python. Idempotent: a venv that already imports the pinned version is
# reused. Never on the README test path; only the side-by-side benchmarks call it.
#
#   python=$(bash bench/models/torch_venv.sh)     # ~5 GB the first time (CUDA wheel + nvidia libs)
#   LOOM_TORCH_VENV=/path bash bench/models/torch_venv.sh
set -euo pipefail
TORCH_VERSION=2.15.0
NUMPY_VERSION=2.3.5
venv=${LOOM_TORCH_VENV:-$HOME/.cache/loom/torch-$TORCH_VERSION}
if "$venv/bin/python" -c "import torch, numpy, sys; sys.exit(torch.__version__.split('+')[0] != '$TORCH_VERSION')" \
    >/dev/null 2>&1; then
  echo "$venv/bin/python"
  exit 0
fi
echo "[torch_venv] installing torch==$TORCH_VERSION numpy==$NUMPY_VERSION into $venv" >&2
python3 -m venv "$venv" >&2
"$venv/bin/pip" install --quiet --disable-pip-version-check \
  "torch==$TORCH_VERSION" "numpy==$NUMPY_VERSION" >&2
"$venv/bin/python" -c "import torch; print('[torch_venv] torch', torch.__version__)" >&2
echo "$venv/bin/python"
