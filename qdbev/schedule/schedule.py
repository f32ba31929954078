"""A validated sequence of progressive-QAT phases (QD-BEV "Progressive quantization-aware training", Fig. 2)."""
import hashlib
import json
from typing import Any, Dict, Iterator, List, Mapping, Optional, Sequence, Tuple, Union

from qdbev.schedule.phase import FP_BITS, STAGES, Phase


def _wa(bits: Tuple[int, int]) -> str:
    return f'W{bits[0]}A{bits[1]}'


def _phase_iters(phase: Phase, iters_per_epoch: Optional[int]) -> int:
    """Length of a fixed phase in iterations."""
    if not phase.fixed:
        raise ValueError(f"Schedule: phase '{phase.name}' lasts until_plateau, so its length is known only at run "
                         f'time; drive it with PlateauTracker')
    if phase.unit == 'iter' or phase.length == 0:
        return phase.length
    if isinstance(iters_per_epoch, bool) or not isinstance(iters_per_epoch, int) or iters_per_epoch <= 0:
        raise ValueError(f"Schedule: phase '{phase.name}' is measured in epochs; pass iters_per_epoch > 0 "
                         f'(got {iters_per_epoch!r})')
    return phase.length * iters_per_epoch


class Schedule:
    """Phases in training order, validated at construction.

    Always checked: at least one phase, unique names, valid phases (see :class:`Phase`). With
    ``progressive=True`` also: (1) no phase raises the weight or activation bits of a stage above the
    previous phase's; (2) in every phase the bits are non-decreasing along the stage order
    backbone -> neck -> encoder -> decoder, so a stage is never quantized further before every earlier
    stage (lowering several consecutive stages in one phase is allowed, skipping one is not).
    """

    def __init__(self, phases: Sequence[Union[Phase, Mapping[str, Any]]], progressive: bool = True) -> None:
        if not phases:
            raise ValueError('Schedule: no phases; give at least one Phase')
        self.phases: Tuple[Phase, ...] = tuple(p if isinstance(p, Phase) else Phase.from_dict(p) for p in phases)
        self.progressive = bool(progressive)
        names = [p.name for p in self.phases]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ValueError(f'Schedule: phase names must be unique, repeated {dup}')
        if self.progressive:
            self._check_progressive()

    def _check_progressive(self) -> None:
        for i, phase in enumerate(self.phases):
            for kind, k in (('weight', 0), ('activation', 1)):
                for early, late in zip(STAGES, STAGES[1:]):
                    if phase.bits[late][k] < phase.bits[early][k]:
                        raise ValueError(
                            f"Schedule: phase '{phase.name}' has {kind} bits of '{late}' "
                            f"({_wa(phase.bits[late])}) below '{early}' ({_wa(phase.bits[early])}); progressive "
                            f"order is {' -> '.join(STAGES)} (set progressive=False to allow)")
            if i == 0:
                continue
            prev = self.phases[i - 1]
            for stage in STAGES:
                if any(phase.bits[stage][k] > prev.bits[stage][k] for k in (0, 1)):
                    raise ValueError(
                        f"Schedule: phase '{phase.name}' raises '{stage}' from {_wa(prev.bits[stage])} to "
                        f"{_wa(phase.bits[stage])}; progressive schedules only lower precision "
                        f'(set progressive=False to allow)')

    def __len__(self) -> int:
        return len(self.phases)

    def __getitem__(self, i: int) -> Phase:
        return self.phases[i]

    def __iter__(self) -> Iterator[Phase]:
        return iter(self.phases)

    def index(self, name: str) -> int:
        """Index of the phase called ``name``."""
        for i, phase in enumerate(self.phases):
            if phase.name == name:
                return i
        raise KeyError(f"Schedule: no phase named '{name}'; have {[p.name for p in self.phases]}")

    def changed_stages(self, i: int) -> Tuple[str, ...]:
        """Stages whose (w_bits, a_bits) change entering phase ``i`` (phase 0 compares with FP (32, 32))."""
        if not 0 <= i < len(self.phases):
            raise IndexError(f'Schedule.changed_stages: phase index {i} outside [0, {len(self.phases)})')
        prev = self.phases[i - 1].bits if i > 0 else {s: FP_BITS for s in STAGES}
        return tuple(s for s in STAGES if self.phases[i].bits[s] != prev[s])

    def lengths_in_iters(self, iters_per_epoch: Optional[int] = None) -> List[int]:
        """Each phase's length in iterations (raises at an until_plateau phase)."""
        return [_phase_iters(p, iters_per_epoch) for p in self.phases]

    def phase_at(self, iteration: int, iters_per_epoch: Optional[int] = None) -> Tuple[int, int]:
        """``(phase index, iterations since the phase started)`` of global iteration ``iteration`` (0-based).

        For fixed-length phases (epochs converted with ``iters_per_epoch``); length-0 phases (given starting
        points) are never returned. Raises past the end, or on reaching an until_plateau phase.
        """
        if isinstance(iteration, bool) or not isinstance(iteration, int) or iteration < 0:
            raise ValueError(f'Schedule.phase_at: iteration must be an int >= 0, got {iteration!r}')
        start = 0
        for i, phase in enumerate(self.phases):
            length = _phase_iters(phase, iters_per_epoch)
            if iteration < start + length:
                return i, iteration - start
            start += length
        raise ValueError(f'Schedule.phase_at: iteration {iteration} is past the end of the schedule '
                         f'({start} iterations)')

    def to_dict(self) -> Dict[str, Any]:
        """``{'progressive': bool, 'phases': [phase dicts]}`` (json-able; :meth:`from_dict` inverts it)."""
        return {'progressive': self.progressive, 'phases': [p.to_dict() for p in self.phases]}

    @classmethod
    def from_dict(cls, cfg: Mapping[str, Any]) -> 'Schedule':
        """A schedule from :meth:`to_dict` output or a config dict with the same keys."""
        if not isinstance(cfg, Mapping) or 'phases' not in cfg:
            raise ValueError(f"Schedule config must be a dict with 'phases' (and optional 'progressive'), got {cfg!r}")
        unknown = sorted(set(cfg) - {'phases', 'progressive'})
        if unknown:
            raise ValueError(f"Schedule config: unknown key(s) {unknown}; allowed ['phases', 'progressive']")
        return cls(cfg['phases'], progressive=cfg.get('progressive', True))

    def fingerprint(self) -> str:
        """16 hex chars of sha256 over the canonical json of :meth:`to_dict` (stable across runs)."""
        text = json.dumps(self.to_dict(), sort_keys=True, separators=(',', ':'))
        return hashlib.sha256(text.encode('utf-8')).hexdigest()[:16]

    def prefix(self, n: int) -> 'Schedule':
        """The schedule of the first ``n`` phases (same ``progressive`` flag): a run of it that finished can be
        continued into this one's later phases (see :meth:`extends`)."""
        if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= len(self.phases):
            raise ValueError(f'Schedule.prefix: n must be an int in [1, {len(self.phases)}], got {n!r}')
        return Schedule(self.phases[:n], progressive=self.progressive)

    def extends(self, fingerprint: str, n: int) -> bool:
        """True when this schedule starts with the ``n`` phases of the schedule whose fingerprint is ``fingerprint``
        and has more after them: a run that finished that schedule may go on into the rest of this one."""
        return 1 <= n < len(self.phases) and self.prefix(n).fingerprint() == fingerprint

    def check_resume(self, fingerprint: str) -> None:
        """Raise when a checkpoint's schedule fingerprint differs from this schedule's."""
        if fingerprint != self.fingerprint():
            raise ValueError(f'Schedule changed since the checkpoint (fingerprint {fingerprint} != '
                             f'{self.fingerprint()}); resume with the original schedule or start a new work_dir')

    def __repr__(self) -> str:
        body = ', '.join(f"{p.name}[{'/'.join(_wa(p.bits[s]) for s in STAGES)}]" for p in self.phases)
        return f'Schedule({body}, progressive={self.progressive})'
