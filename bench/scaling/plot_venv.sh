#!/usr/bin/env bash
# A virtual environment with matplotlib (pinned) outside the repository, for bench/scaling/plot.py;
# prints its python. Idempotent; never on the README test path.
set -euo pipefail
MATPLOTLIB_VERSION=3.9.2
venv=${LOOM_PLOT_VENV:-$HOME/.cache/loom/plot-venv}
if ! "$venv/bin/python" -c "import matplotlib, sys; sys.exit(matplotlib.__version__ != '$MATPLOTLIB_VERSION')" \
    > /dev/null 2>&1; then
  echo "[plot_venv] installing matplotlib==$MATPLOTLIB_VERSION into $venv" >&2
  python3 -m venv "$venv" >&2
  "$venv/bin/pip" install --quiet --disable-pip-version-check "matplotlib==$MATPLOTLIB_VERSION" >&2
fi
echo "$venv/bin/python"
