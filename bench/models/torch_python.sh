# Sourced by the PyTorch comparison scripts: sets `python` to a python3 with the current PyTorch
# release (pinned in bench/models/torch_venv.sh, installed into a venv outside the repository on
# first use, ~5 GB) or, when LOOM_TORCH_PYTHON is set, to that interpreter (which must import
# torch and numpy). Usage: source bench/models/torch_python.sh <calling script's name>
if [ -n "${LOOM_TORCH_PYTHON:-}" ]; then
  python=$LOOM_TORCH_PYTHON
  if ! "$python" -c 'import torch, numpy' >/dev/null 2>&1; then
    echo "$1: LOOM_TORCH_PYTHON=$python cannot import torch and numpy" >&2
    exit 1
  fi
else
  python=$(bash "$(dirname "${BASH_SOURCE[0]}")/torch_venv.sh") || {
    echo "$1: could not install PyTorch (bench/models/torch_venv.sh)" >&2
    exit 1
  }
fi
