"""A schedule laid out in training iterations: phase lengths, plateau caps, evaluation points, total length.

Plain Python (no mmengine): :class:`ProgressiveQATHook` asks it where the run stands.

* A fixed phase lasts ``length`` epochs/iters (epochs x ``iters_per_epoch``); length 0 is a given starting point
  (the FP teacher, a PTQ step): it is entered, evaluated and saved, but not trained.
* An ``until_plateau(patience, cap)`` phase is evaluated every ``eval_interval`` of its units and at its cap;
  a :class:`~qdbev.schedule.PlateauTracker` over those evaluations (its cap counted in evaluations) ends it.
* The run is as long as every phase at its cap: ``total_iters`` is the train loop's ``max_iters``; the hook stops
  the loop early when the last phase ends.
"""
import math
from dataclasses import dataclass
from typing import List, Optional

from qdbev.schedule import Phase, PlateauTracker, Schedule, UntilPlateau


def _units_to_iters(units: int, phase: Phase, iters_per_epoch: Optional[int]) -> int:
    if phase.unit == 'iter' or units == 0:
        return units
    if isinstance(iters_per_epoch, bool) or not isinstance(iters_per_epoch, int) or iters_per_epoch <= 0:
        raise ValueError(f"phase '{phase.name}' is measured in epochs: iters_per_epoch must be an int > 0, got "
                         f'{iters_per_epoch!r}')
    return units * iters_per_epoch


@dataclass(frozen=True)
class PhaseSpan:
    """One phase in iterations: ``iters`` = its length (fixed) or cap (plateau), ``eval_every`` > 0 for plateau
    phases (iterations between evaluations), 0 otherwise."""

    index: int
    name: str
    iters: int
    plateau: Optional[UntilPlateau] = None
    eval_every: int = 0

    @property
    def num_evals(self) -> int:
        """Evaluations a plateau phase makes when it runs to its cap (0 for fixed phases)."""
        return math.ceil(self.iters / self.eval_every) if self.plateau is not None else 0


class PhasePlan:
    """Iteration layout of a :class:`Schedule`.

    Args:
        schedule: the phases.
        iters_per_epoch: iterations of one epoch (``len(train_dataloader)``); needed only for epoch phases.
        eval_interval: plateau phases are evaluated every ``eval_interval`` of their units (epochs or iters).
    """

    def __init__(self, schedule: Schedule, iters_per_epoch: Optional[int] = None, eval_interval: int = 1) -> None:
        if isinstance(eval_interval, bool) or not isinstance(eval_interval, int) or eval_interval < 1:
            raise ValueError(f'ProgressiveQATHook eval_interval must be an int >= 1, got {eval_interval!r}')
        self.schedule = schedule
        self.iters_per_epoch = iters_per_epoch
        self.eval_interval = eval_interval
        spans: List[PhaseSpan] = []
        for i, phase in enumerate(schedule):
            if phase.fixed:
                spans.append(PhaseSpan(i, phase.name, _units_to_iters(phase.length, phase, iters_per_epoch)))
            else:
                cap = _units_to_iters(phase.length.cap, phase, iters_per_epoch)
                every = _units_to_iters(min(eval_interval, phase.length.cap), phase, iters_per_epoch)
                spans.append(PhaseSpan(i, phase.name, cap, phase.length, every))
        self.spans = tuple(spans)

    def __len__(self) -> int:
        return len(self.spans)

    @property
    def total_iters(self) -> int:
        """Iterations of the whole schedule with every plateau phase at its cap (the train loop's max_iters)."""
        return sum(s.iters for s in self.spans)

    def is_eval_point(self, index: int, pos: int) -> bool:
        """True when a plateau phase ``index`` is evaluated after ``pos`` of its iterations (1-based count)."""
        span = self.spans[index]
        if span.plateau is None or pos <= 0:
            return False
        return pos % span.eval_every == 0 or pos >= span.iters

    def tracker(self, index: int, min_delta: float = 0.0) -> Optional[PlateauTracker]:
        """A fresh :class:`PlateauTracker` (cap in evaluations) for plateau phase ``index``; None for fixed."""
        span = self.spans[index]
        if span.plateau is None:
            return None
        return PlateauTracker(span.plateau.patience, span.num_evals, mode='max', min_delta=min_delta)

    def layout(self) -> List[int]:
        """Per phase its iterations (length or cap): compared on resume, like the schedule fingerprint."""
        return [s.iters for s in self.spans]

    def describe(self) -> str:
        parts = []
        for s in self.spans:
            kind = (f'<= {s.iters} it, eval every {s.eval_every}, patience {s.plateau.patience}'
                    if s.plateau is not None else f'{s.iters} it')
            parts.append(f'{s.index}:{s.name} ({kind})')
        return '; '.join(parts)
