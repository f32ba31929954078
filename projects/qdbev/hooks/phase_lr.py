"""Learning rate inside a progressive-QAT phase (the hook owns the lr; configs set ``param_scheduler = None``).

    lr_g(pos) = base_lr_g * policy.lr_scale * warmup(pos) * decay(pos) * guard_scale

* ``warmup(pos) = r + (1 - r) * pos / W`` for ``pos < W = policy.warmup_iters``, else 1 (mmengine ``LinearLR``
  with ``start_factor = r``; BEVFormer uses r = 1/3);
* ``decay``: 'constant' (1) or 'cosine' ``m + (1 - m) * (1 + cos(pi * pos / L)) / 2`` over the phase's
  length (or cap) L with floor ratio m;
* ``guard_scale``: the product of the stability guard's roll-back reductions.

``pos`` counts the phase's iterations from 0 (the first iteration of a phase has pos 0).
"""
import math
from typing import List, Sequence

from qdbev.schedule import LRPolicy

DECAYS = ('constant', 'cosine')


def phase_lr_factor(pos: int, policy: LRPolicy, length: int, warmup_ratio: float = 1.0 / 3,
                    decay: str = 'constant', eta_min_ratio: float = 0.0) -> float:
    """Multiplier of the base learning rate at iteration ``pos`` (>= 0) of a phase of ``length`` iterations."""
    if decay not in DECAYS:
        raise ValueError(f'ProgressiveQATHook lr_decay must be one of {DECAYS}, got {decay!r}')
    factor = float(policy.lr_scale)
    if pos < policy.warmup_iters:
        factor *= warmup_ratio + (1.0 - warmup_ratio) * pos / policy.warmup_iters
    if decay == 'cosine' and length > 0:
        frac = min(pos, length) / length
        factor *= eta_min_ratio + (1.0 - eta_min_ratio) * 0.5 * (1.0 + math.cos(math.pi * frac))
    return factor


def set_group_lrs(param_groups: Sequence[dict], base_lrs: Sequence[float], factor: float) -> List[float]:
    """``group['lr'] = base * factor`` for every optimizer param group; returns the new lrs."""
    if len(param_groups) != len(base_lrs):
        raise ValueError(f'ProgressiveQATHook: the optimizer has {len(param_groups)} param groups but {len(base_lrs)} '
                         f'base learning rates were recorded (param groups changed during training?)')
    out = []
    for group, base in zip(param_groups, base_lrs):
        group['lr'] = base * factor
        out.append(group['lr'])
    return out
