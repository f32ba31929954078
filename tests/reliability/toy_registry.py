"""Registers the toy progressive-QAT setup of tests/projects/qdbev/progressive_toy.py with mmengine's registries, so
that tools/train.py (and tools/dist_train.sh) can run it from a config file (see toy_cli.py).

``ToyDistiller`` here takes ``pad_kib``: a zero buffer of that many KiB that makes its checkpoints larger than the
run's log files (the full-disk simulation needs that).
"""
import os.path as osp
import sys

import torch
from mmengine.registry import DATASETS, METRICS, MODELS

sys.path.insert(0, osp.join(osp.dirname(osp.dirname(osp.abspath(__file__))), 'projects', 'qdbev'))

from progressive_toy import ScriptedMetric, ToyDataset, ToyDistiller  # noqa: E402

import projects.common  # noqa: E402,F401  (WeightsOnlyCheckpointHook, atomic_local backend)
import projects.qdbev.hooks  # noqa: E402,F401  (ProgressiveQATHook, GuardedOptimWrapper, FaultInjectionHook)


@MODELS.register_module(name='ToyDistiller')
class PaddedToyDistiller(ToyDistiller):
    """The toy distiller plus ``pad_kib`` KiB of zeros in its state dict."""

    def __init__(self, seed: int = 0, pad_kib: int = 0) -> None:
        super().__init__(seed)
        self.register_buffer('pad', torch.zeros(int(pad_kib) * 256))


DATASETS.register_module(name='ToyDataset', module=ToyDataset)
METRICS.register_module(name='ScriptedMetric', module=ScriptedMetric)
