"""Glue shared by the qdbev plugins: weights-only-safe, atomically written mmengine checkpoints."""
from .checkpoint import AtomicLocalBackend, WeightsOnlyCheckpointHook, atomic_write_bytes

__all__ = ['AtomicLocalBackend', 'WeightsOnlyCheckpointHook', 'atomic_write_bytes']
