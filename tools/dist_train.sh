#!/usr/bin/env bash
# Distributed training with torchrun:  tools/dist_train.sh CONFIG GPUS [tools/train.py args]
# One process per GPU (NCCL); on a machine without CUDA, GPUS processes share the CPU (gloo).
# NNODES, NODE_RANK, MASTER_ADDR, PORT may be set in the environment for multi-node runs.
set -euo pipefail
if [ $# -lt 2 ]; then
  echo "usage: $0 CONFIG GPUS [train.py args]" >&2
  exit 2
fi
CONFIG=$1
GPUS=$2
shift 2
root=$(cd "$(dirname "$0")/.." && pwd)
PY=${PYTHON:-python}
if [ -x "$root/.venv/bin/python" ] && [ -z "${PYTHON:-}" ]; then PY=$root/.venv/bin/python; fi
case "$GPUS" in
  ''|*[!0-9]*|0) echo "dist_train.sh: GPUS must be a positive integer, got '$GPUS'" >&2; exit 2 ;;
esac
NDEV=$("$PY" -c 'import torch; print(torch.cuda.device_count() if torch.cuda.is_available() else 0)')
if [ "$NDEV" -gt 0 ] && [ "$GPUS" -gt "$NDEV" ]; then
  echo "dist_train.sh: GPUS=$GPUS but this machine has $NDEV visible GPU(s); pass at most $NDEV" >&2
  exit 2
fi
NNODES=${NNODES:-1}
NODE_RANK=${NODE_RANK:-0}
PORT=${PORT:-29500}
MASTER_ADDR=${MASTER_ADDR:-127.0.0.1}
PYTHONPATH="$root:${PYTHONPATH:-}" exec "$PY" -m torch.distributed.run \
  --nnodes="$NNODES" --node_rank="$NODE_RANK" --master_addr="$MASTER_ADDR" --master_port="$PORT" \
  --nproc_per_node="$GPUS" "$root/tools/train.py" "$CONFIG" --launcher pytorch "$@"
