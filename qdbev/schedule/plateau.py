"""Ends an until_plateau phase: stop when the validation metric has not improved for ``patience`` evaluations."""
import math
from typing import Any, Dict, Optional

from qdbev.schedule.phase import UntilPlateau


class PlateauTracker:
    """State machine over validation results (e.g. NDS) of one phase.

    ``update(value)`` counts an evaluation; a value improves when it beats the best so far by more than
    ``min_delta`` (higher is better for ``mode='max'``, lower for 'min'; NaN/inf never improve). The phase
    should stop once ``patience`` evaluations in a row did not improve (reason 'plateau') or after ``cap``
    evaluations (reason 'cap').
    """

    def __init__(self, patience: int, cap: int, mode: str = 'max', min_delta: float = 0.0) -> None:
        UntilPlateau(patience, cap)  # validates patience >= 1, cap >= 1
        if mode not in ('max', 'min'):
            raise ValueError(f"PlateauTracker: mode must be 'max' or 'min', got '{mode}'")
        if not min_delta >= 0:
            raise ValueError(f'PlateauTracker: min_delta must be >= 0, got {min_delta}')
        self.patience, self.cap, self.mode, self.min_delta = patience, cap, mode, float(min_delta)
        self.best: Optional[float] = None
        self.best_eval = 0  # 1-based evaluation index of the best value, 0 = none yet
        self.num_evals = 0
        self.bad_evals = 0

    @classmethod
    def from_length(cls, length: UntilPlateau, mode: str = 'max', min_delta: float = 0.0) -> 'PlateauTracker':
        return cls(length.patience, length.cap, mode, min_delta)

    def _improves(self, value: float) -> bool:
        if not math.isfinite(value):
            return False
        if self.best is None:
            return True
        if self.mode == 'max':
            return value > self.best + self.min_delta
        return value < self.best - self.min_delta

    def update(self, value: float) -> bool:
        """Record one evaluation; returns True when the phase should stop."""
        value = float(value)
        self.num_evals += 1
        if self._improves(value):
            self.best, self.best_eval, self.bad_evals = value, self.num_evals, 0
        else:
            self.bad_evals += 1
        return self.should_stop

    @property
    def reason(self) -> Optional[str]:
        """'plateau', 'cap' or None (keep training)."""
        if self.bad_evals >= self.patience:
            return 'plateau'
        if self.num_evals >= self.cap:
            return 'cap'
        return None

    @property
    def should_stop(self) -> bool:
        return self.reason is not None

    def state_dict(self) -> Dict[str, Any]:
        return {'patience': self.patience, 'cap': self.cap, 'mode': self.mode, 'min_delta': self.min_delta,
                'best': self.best, 'best_eval': self.best_eval, 'num_evals': self.num_evals,
                'bad_evals': self.bad_evals}

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        """Restore counters; the configuration (patience, cap, mode, min_delta) must match."""
        config = {k: state.get(k) for k in ('patience', 'cap', 'mode', 'min_delta')}
        mine = {'patience': self.patience, 'cap': self.cap, 'mode': self.mode, 'min_delta': self.min_delta}
        if config != mine:
            raise ValueError(f'PlateauTracker.load_state_dict: saved config {config} differs from {mine}; '
                             f'the schedule changed since the checkpoint')
        self.best, self.best_eval = state['best'], state['best_eval']
        self.num_evals, self.bad_evals = state['num_evals'], state['bad_evals']
