#!/usr/bin/env bash
# Distributed training with torchrun:  tools/dist_train.sh CONFIG GPUS [tools/train.py args]
# One process per GPU (NCCL); on a machine without CUDA, GPUS processes share the CPU (gloo), at most one per core.
# NNODES, NODE_RANK, MASTER_ADDR, PORT may be set in the environment for multi-node runs.
set -euo pipefail
if [ $# -lt 2 ]; then
  echo "usage: $0 CONFIG GPUS [train.py args]" >&2
  exit 2
fi
CONFIG=$1
GPUS=$2
shift 2
exec bash "$(dirname "$0")/_dist_run.sh" dist_train.sh train.py "$GPUS" "$CONFIG" "$@"
