"""``FaultInjectionHook``: break a run on purpose, to test the stability guard and resumption.

* ``nan_loss_iters``: the first time each of these iterations (0-based) runs, the :class:`.GuardedOptimWrapper`
  is told to turn its loss into NaN (on ``ranks``, default all) — a poisoned batch (a rolled-back run that
  replays the iteration gets a clean batch).
* ``pause_after_iter``: after that many completed iterations (after the checkpoint hook has saved), every rank
  waits at a barrier, rank 0 writes ``WORK_DIR/fault_paused.json`` with every rank's pid, and all ranks sleep,
  so a test can ``kill -9`` the job at a known point.

Not for real training; configs add it through ``--cfg-options`` in tests only.
"""
import json
import os
import os.path as osp
import time
from typing import Optional, Sequence

import torch.distributed as dist
from mmengine.dist import all_gather_object, get_rank, is_main_process
from mmengine.hooks import Hook
from mmengine.registry import HOOKS

from projects.common.checkpoint import atomic_write_bytes


@HOOKS.register_module()
class FaultInjectionHook(Hook):
    """See module docstring."""

    priority = 'LOWEST'  # after CheckpointHook (VERY_LOW) in after_train_iter

    def __init__(self, nan_loss_iters: Sequence[int] = (), ranks: Optional[Sequence[int]] = None,
                 pause_after_iter: Optional[int] = None, pause_seconds: float = 600.0) -> None:
        self.nan_loss_iters = {int(i) for i in nan_loss_iters}
        self.fired = set()
        self.ranks = None if ranks is None else {int(r) for r in ranks}
        self.pause_after_iter = pause_after_iter
        self.pause_seconds = float(pause_seconds)

    def before_train_iter(self, runner, batch_idx: int, data_batch=None) -> None:
        if runner.iter not in self.nan_loss_iters or runner.iter in self.fired:
            return
        self.fired.add(runner.iter)
        if self.ranks is None or get_rank() in self.ranks:
            wrapper = runner.optim_wrapper
            if not hasattr(wrapper, 'poison_next_loss'):
                raise TypeError('FaultInjectionHook nan_loss_iters needs optim_wrapper type GuardedOptimWrapper')
            wrapper.poison_next_loss()

    def after_train_iter(self, runner, batch_idx: int, data_batch=None, outputs=None) -> None:
        if self.pause_after_iter is None or runner.iter + 1 != int(self.pause_after_iter):
            return
        if dist.is_available() and dist.is_initialized():
            dist.barrier()
        pids = all_gather_object(os.getpid())
        if is_main_process():
            atomic_write_bytes(json.dumps(dict(iter=runner.iter + 1, pids=pids)).encode(),
                               osp.join(runner.work_dir, 'fault_paused.json'))
        time.sleep(self.pause_seconds)
