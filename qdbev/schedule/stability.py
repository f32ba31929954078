"""Guards QAT against gradient explosion: skip non-finite steps, roll back after K bad steps in a row."""
import math
from dataclasses import dataclass
from typing import Any, Dict, Optional

import torch

ACTIONS = ('ok', 'skip', 'rollback')


@dataclass(frozen=True)
class GuardDecision:
    """What to do with the current step: 'ok' (apply it), 'skip' (drop its update) or 'rollback' (restore the
    last good checkpoint and multiply the learning rate by ``lr_factor``; ``lr_scale`` is the product of all
    rollbacks' factors so far)."""

    action: str
    lr_factor: float = 1.0
    lr_scale: float = 1.0


def _finite(value: Any) -> bool:
    if torch.is_tensor(value):
        return bool(torch.isfinite(value.detach()).all())
    return math.isfinite(float(value))


class StabilityGuard:
    """Counts bad steps (non-finite loss or gradient norm, or a gradient norm above ``max_grad_norm``).

    A bad step says 'skip'; the ``max_consecutive``-th bad step in a row says 'rollback' with ``lr_factor``
    and starts counting again. A good step resets the run of bad steps.
    """

    def __init__(self, max_consecutive: int = 3, lr_factor: float = 0.5,
                 max_grad_norm: Optional[float] = None) -> None:
        if isinstance(max_consecutive, bool) or not isinstance(max_consecutive, int) or max_consecutive < 1:
            raise ValueError(f'StabilityGuard: max_consecutive must be an int >= 1, got {max_consecutive!r}')
        if not 0.0 < lr_factor <= 1.0:
            raise ValueError(f'StabilityGuard: lr_factor must be in (0, 1], got {lr_factor}')
        if max_grad_norm is not None and not max_grad_norm > 0:
            raise ValueError(f'StabilityGuard: max_grad_norm must be > 0 or None, got {max_grad_norm}')
        self.max_consecutive, self.lr_factor, self.max_grad_norm = max_consecutive, float(lr_factor), max_grad_norm
        self.steps = 0
        self.total_bad = 0
        self.consecutive_bad = 0
        self.rollbacks = 0
        self.lr_scale = 1.0

    def is_bad(self, loss: Any, grad_norm: Any = None) -> bool:
        if not _finite(loss):
            return True
        if grad_norm is None:
            return False
        if not _finite(grad_norm):
            return True
        return self.max_grad_norm is not None and float(grad_norm) > self.max_grad_norm

    def step(self, loss: Any, grad_norm: Any = None) -> GuardDecision:
        """Judge one step from its loss (float or tensor) and optional total gradient norm."""
        self.steps += 1
        if not self.is_bad(loss, grad_norm):
            self.consecutive_bad = 0
            return GuardDecision('ok', 1.0, self.lr_scale)
        self.total_bad += 1
        self.consecutive_bad += 1
        if self.consecutive_bad < self.max_consecutive:
            return GuardDecision('skip', 1.0, self.lr_scale)
        self.consecutive_bad = 0
        self.rollbacks += 1
        self.lr_scale *= self.lr_factor
        return GuardDecision('rollback', self.lr_factor, self.lr_scale)

    def state_dict(self) -> Dict[str, Any]:
        return {'steps': self.steps, 'total_bad': self.total_bad, 'consecutive_bad': self.consecutive_bad,
                'rollbacks': self.rollbacks, 'lr_scale': self.lr_scale}

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        missing = sorted(set(self.state_dict()) - set(state))
        if missing:
            raise ValueError(f'StabilityGuard.load_state_dict: missing key(s) {missing}')
        self.steps, self.total_bad = int(state['steps']), int(state['total_bad'])
        self.consecutive_bad, self.rollbacks = int(state['consecutive_bad']), int(state['rollbacks'])
        self.lr_scale = float(state['lr_scale'])
