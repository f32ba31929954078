#!/usr/bin/env bash
# Distributed evaluation with torchrun:  tools/dist_test.sh CONFIG CHECKPOINT GPUS [tools/test.py args]
# One process per GPU (NCCL); on a machine without CUDA, GPUS processes share the CPU (gloo), at most one per core.
set -euo pipefail
if [ $# -lt 3 ]; then
  echo "usage: $0 CONFIG CHECKPOINT GPUS [test.py args]" >&2
  exit 2
fi
CONFIG=$1
CHECKPOINT=$2
GPUS=$3
shift 3
exec bash "$(dirname "$0")/_dist_run.sh" dist_test.sh test.py "$GPUS" "$CONFIG" "$CHECKPOINT" "$@"
