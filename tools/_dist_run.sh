#!/usr/bin/env bash
# Shared by tools/dist_train.sh and tools/dist_test.sh:  _dist_run.sh NAME TOOL GPUS [TOOL args]
# Checks GPUS (a positive integer, at most the visible GPUs; on a machine without CUDA at most the CPU cores,
# unless QDBEV_ALLOW_OVERSUBSCRIBE=1) and runs tools/TOOL under torchrun with --launcher pytorch.
# NNODES, NODE_RANK, MASTER_ADDR, PORT may be set in the environment for multi-node runs.
set -euo pipefail
NAME=$1
TOOL=$2
GPUS=$3
shift 3
root=$(cd "$(dirname "$0")/.." && pwd)
PY=${PYTHON:-python}
if [ -x "$root/.venv/bin/python" ] && [ -z "${PYTHON:-}" ]; then PY=$root/.venv/bin/python; fi
case "$GPUS" in
  ''|*[!0-9]*|0) echo "$NAME: GPUS must be a positive integer, got '$GPUS'" >&2; exit 2 ;;
esac
NDEV=$("$PY" -c 'import torch; print(torch.cuda.device_count() if torch.cuda.is_available() else 0)')
if [ "$NDEV" -gt 0 ] && [ "$GPUS" -gt "$NDEV" ]; then
  echo "$NAME: GPUS=$GPUS but this machine has $NDEV visible GPU(s); pass at most $NDEV" >&2
  exit 2
fi
NCPU=$(env -u OMP_NUM_THREADS -u OMP_THREAD_LIMIT nproc 2>/dev/null || echo 1)  # nproc alone follows OMP_NUM_THREADS
if [ "$NDEV" -eq 0 ] && [ "$GPUS" -gt "$NCPU" ] && [ "${QDBEV_ALLOW_OVERSUBSCRIBE:-0}" != 1 ]; then
  echo "$NAME: GPUS=$GPUS CPU processes (no CUDA GPU) but only $NCPU CPU core(s); pass at most $NCPU" \
       "or set QDBEV_ALLOW_OVERSUBSCRIBE=1" >&2
  exit 2
fi
NNODES=${NNODES:-1}
NODE_RANK=${NODE_RANK:-0}
PORT=${PORT:-29500}
MASTER_ADDR=${MASTER_ADDR:-127.0.0.1}
PYTHONPATH="$root:${PYTHONPATH:-}" exec "$PY" -m torch.distributed.run \
  --nnodes="$NNODES" --node_rank="$NODE_RANK" --master_addr="$MASTER_ADDR" --master_port="$PORT" \
  --nproc_per_node="$GPUS" "$root/tools/$TOOL" "$@" --launcher pytorch
