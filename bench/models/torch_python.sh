# Sourced by the PyTorch comparison scripts: sets `python` to a python3 that can import torch and
# numpy (LOOM_TORCH_PYTHON first, then python3, then Debian's /usr/bin/python3), or exits naming
# the set-up command. Usage: source bench/models/torch_python.sh <calling script's name>
python=""
for candidate in ${LOOM_TORCH_PYTHON:-} python3 /usr/bin/python3; do
  if "$candidate" -c 'import torch, numpy' >/dev/null 2>&1; then python=$candidate; break; fi
done
if [ -z "$python" ]; then
  echo "$1: no python3 with torch; run: bash scripts/setup.sh --with-torch" >&2
  exit 1
fi
