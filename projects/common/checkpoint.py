"""mmengine checkpoints that load with ``torch.load(weights_only=True)`` and are written atomically.

torch >= 2.6 loads with ``weights_only=True`` by default. An mmengine checkpoint holds, besides tensors, the
message hub's ``HistoryBuffer`` objects (whose pickled state contains bound methods, i.e. ``builtins.getattr``)
and numpy arrays/scalars. Allow-listing ``getattr`` would re-open arbitrary code execution, so instead
:class:`WeightsOnlyCheckpointHook` stores those objects as plain data (tensors, python scalars) when a checkpoint
is saved and rebuilds them after it is loaded; nothing needs to be allow-listed and safety stays on.

:class:`AtomicLocalBackend` (``backend_args=dict(backend='atomic_local')`` in ``CheckpointHook``) writes a
checkpoint to a temporary file in the same folder, fsyncs it and renames it over the target, so a crash or a
full disk mid-write leaves the previous checkpoint intact.
"""
from typing import Any

import numpy as np
import torch
from mmengine.fileio import LocalBackend, register_backend
from mmengine.hooks import Hook
from mmengine.logging import HistoryBuffer
from mmengine.registry import HOOKS

from qdbev.fileio import atomic_write_bytes

__all__ = ['AtomicLocalBackend', 'WeightsOnlyCheckpointHook', 'atomic_write_bytes']

_BUFFER_TAG = '__qdbev_history_buffer__'


@register_backend('atomic_local')
class AtomicLocalBackend(LocalBackend):
    """mmengine's local storage backend whose ``put`` is atomic (temporary file + rename)."""

    def put(self, obj: bytes, filepath) -> None:
        atomic_write_bytes(obj, filepath)


def to_plain(obj: Any) -> Any:
    """Recursively replace numpy arrays by tensors, numpy scalars by python scalars and ``HistoryBuffer`` by a
    tagged dict, so that ``torch.load(weights_only=True)`` accepts the result."""
    if isinstance(obj, HistoryBuffer):
        return {_BUFFER_TAG: True, 'max_length': int(obj.max_length),
                'log_history': torch.from_numpy(np.asarray(obj._log_history, dtype=np.float64)),
                'count_history': torch.from_numpy(np.asarray(obj._count_history, dtype=np.float64))}
    if isinstance(obj, np.ndarray):
        return torch.from_numpy(np.ascontiguousarray(obj))
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, dict):
        return type(obj)((k, to_plain(v)) for k, v in obj.items())
    if isinstance(obj, (list, tuple)) and not hasattr(obj, '_fields'):
        return type(obj)(to_plain(v) for v in obj)
    return obj


def from_plain(obj: Any) -> Any:
    """Inverse of :func:`to_plain` for the message hub: rebuild ``HistoryBuffer`` objects."""
    if isinstance(obj, dict):
        if obj.get(_BUFFER_TAG):
            # .cpu(): Runner.resume maps the checkpoint onto the training device (CUDA tensors have no .numpy())
            return HistoryBuffer(obj['log_history'].cpu().numpy(), obj['count_history'].cpu().numpy(),
                                 obj['max_length'])
        return type(obj)((k, from_plain(v)) for k, v in obj.items())
    return obj


@HOOKS.register_module()
class WeightsOnlyCheckpointHook(Hook):
    """Keeps mmengine checkpoints loadable with ``torch.load(weights_only=True)`` (see module docstring).

    ``before_save_checkpoint`` converts the checkpoint's ``meta`` and ``message_hub`` to plain data (new objects:
    the live message hub is not touched); ``after_load_checkpoint`` rebuilds the ``HistoryBuffer`` objects so that
    ``Runner.resume`` restores the logged history exactly.
    """

    priority = 'VERY_HIGH'

    def before_save_checkpoint(self, runner, checkpoint: dict) -> None:
        for key in ('meta', 'message_hub'):
            if key in checkpoint:
                checkpoint[key] = to_plain(checkpoint[key])

    def after_load_checkpoint(self, runner, checkpoint: dict) -> None:
        if 'message_hub' in checkpoint:
            checkpoint['message_hub'] = from_plain(checkpoint['message_hub'])
