#!/usr/bin/env bash
# The main job of the README: installs what is missing (tools/setup.sh), then runs tools/quickstart.py, which
# generates the embedded synthetic nuScenes set and takes it through every step (see that file). Re-running
# skips the steps that are done. Arguments go to tools/quickstart.py.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
bash "$root/tools/setup.sh"
cd "$root"
exec "${QDBEV_VENV:-$root/.venv}/bin/python" tools/quickstart.py "$@"
