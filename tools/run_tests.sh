#!/usr/bin/env bash
# The test command of the README: installs what is missing (tools/setup.sh), then runs the suite on CPU.
# Extra arguments go to pytest (e.g. `bash tools/run_tests.sh tests/qdbev -k kl`). pytest's exit code is
# returned unchanged: 5 (no tests collected) is a failure.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
bash "$root/tools/setup.sh"
cd "$root"
exec "${QDBEV_VENV:-$root/.venv}/bin/python" -m pytest -q -p no:cacheprovider "${@:-tests}"
