"""One phase of progressive quantization-aware training (QD-BEV "Progressive quantization-aware training").

A phase is plain data: the (weight, activation) bit widths of each BEVFormer stage, how long it lasts, which
distillation runs, how the optimizer / learning rate enter it, and whether observers are re-calibrated.
Bit width 32 means "not quantized" (floating point).
"""
import dataclasses
from dataclasses import dataclass, field
from typing import Any, Dict, Mapping, Tuple, Union

STAGES: Tuple[str, ...] = ('backbone', 'neck', 'encoder', 'decoder')  # BEVFormer order, QD-BEV Sec. "Progressive"
FP_BITS: Tuple[int, int] = (32, 32)
MIN_BITS, MAX_BITS = 2, 32
DISTILL_TERMS: Tuple[str, ...] = ('img', 'bev', 'vgd', 'head', 'kd')  # joined by '+', or 'none'
UNITS: Tuple[str, ...] = ('epoch', 'iter')
OPTIMIZER_POLICIES: Tuple[str, ...] = ('keep', 'reset')


def _int(value: Any, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f'{where} must be an int, got {value!r}')
    return value


@dataclass(frozen=True)
class UntilPlateau:
    """Phase length "until validation NDS stops improving for ``patience`` evaluations", at most ``cap`` units."""

    patience: int
    cap: int

    def __post_init__(self) -> None:
        if _int(self.patience, 'until_plateau patience') < 1 or _int(self.cap, 'until_plateau cap') < 1:
            raise ValueError(f'until_plateau needs patience >= 1 and cap >= 1, got patience={self.patience}, '
                             f'cap={self.cap}')

    def to_dict(self) -> Dict[str, Any]:
        return {'type': 'until_plateau', 'patience': self.patience, 'cap': self.cap}


def until_plateau(patience: int, cap: int) -> UntilPlateau:
    """Phase length: until the metric plateaus for ``patience`` evaluations, at most ``cap`` epochs/iters."""
    return UntilPlateau(patience, cap)


@dataclass(frozen=True)
class LRPolicy:
    """How the optimizer enters a phase: keep or reset its state, linear warm-up iters, lr scale (x base lr)."""

    optimizer: str = 'keep'
    warmup_iters: int = 0
    lr_scale: float = 1.0

    def __post_init__(self) -> None:
        if self.optimizer not in OPTIMIZER_POLICIES:
            raise ValueError(f"lr.optimizer must be one of {OPTIMIZER_POLICIES}, got '{self.optimizer}'")
        if _int(self.warmup_iters, 'lr.warmup_iters') < 0:
            raise ValueError(f'lr.warmup_iters must be >= 0, got {self.warmup_iters}')
        if isinstance(self.lr_scale, bool) or not isinstance(self.lr_scale, (int, float)) or not self.lr_scale > 0:
            raise ValueError(f'lr.lr_scale must be a number > 0, got {self.lr_scale!r}')


def normalise_distill(mode: str) -> str:
    """Canonical distill mode: 'none' or known terms joined by '+' in DISTILL_TERMS order ('bev+img' -> 'img+bev')."""
    if not isinstance(mode, str) or not mode:
        raise ValueError(f"distill must be 'none' or terms of {DISTILL_TERMS} joined by '+', got {mode!r}")
    if mode == 'none':
        return mode
    terms = mode.split('+')
    bad = [t for t in terms if t not in DISTILL_TERMS]
    if bad or len(set(terms)) != len(terms):
        raise ValueError(f"distill '{mode}': unknown or repeated terms {bad or terms}; use 'none' or terms of "
                         f"{DISTILL_TERMS} joined by '+'")
    return '+'.join(t for t in DISTILL_TERMS if t in terms)


@dataclass(frozen=True)
class Phase:
    """One progressive-QAT phase.

    Attributes:
        name: unique within a schedule.
        bits: ``{stage: (w_bits, a_bits)}`` for stages of STAGES; a stage left out stays FP (32, 32).
        length: int > 0 epochs/iters (``unit``), 0 for a given starting point (e.g. the trained FP teacher),
            or :func:`until_plateau` (patience, cap).
        unit: 'epoch' or 'iter'.
        distill: 'none' or terms of DISTILL_TERMS joined by '+' ('img', 'bev', 'img+bev', 'vgd', 'head', ...).
        lr: :class:`LRPolicy` entering the phase.
        recalibrate: re-run the observers over ``calib_batches`` batches when entering the phase.
    """

    name: str
    bits: Mapping[str, Tuple[int, int]] = field(default_factory=dict)
    length: Union[int, UntilPlateau] = 1
    unit: str = 'epoch'
    distill: str = 'none'
    lr: LRPolicy = field(default_factory=LRPolicy)
    recalibrate: bool = False
    calib_batches: int = 0

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise ValueError(f'phase name must be a non-empty str, got {self.name!r}')
        where = f"phase '{self.name}'"
        if not isinstance(self.bits, Mapping):
            raise ValueError(f'{where}: bits must be a dict {{stage: (w_bits, a_bits)}}, got {self.bits!r}')
        unknown = [s for s in self.bits if s not in STAGES]
        if unknown:
            raise ValueError(f'{where}: unknown stage(s) {unknown} in bits; stages are {STAGES}')
        bits = {}
        for stage in STAGES:
            pair = self.bits.get(stage, FP_BITS)
            if not isinstance(pair, (tuple, list)) or len(pair) != 2:
                raise ValueError(f'{where}: bits[{stage!r}] must be (w_bits, a_bits), got {pair!r}')
            for kind, b in zip(('w_bits', 'a_bits'), pair):
                if _int(b, f'{where}: bits[{stage!r}] {kind}') < MIN_BITS or b > MAX_BITS:
                    raise ValueError(f'{where}: bits[{stage!r}] {kind}={b} is outside [{MIN_BITS}, {MAX_BITS}] '
                                     f'(32 = floating point)')
            bits[stage] = (int(pair[0]), int(pair[1]))
        object.__setattr__(self, 'bits', bits)
        if isinstance(self.length, Mapping):
            object.__setattr__(self, 'length', _length_from_dict(self.length, where))
        if not isinstance(self.length, UntilPlateau) and _int(self.length, f'{where}: length') < 0:
            raise ValueError(f'{where}: length must be >= 0 (0 = given starting point), got {self.length}')
        if self.unit not in UNITS:
            raise ValueError(f"{where}: unit must be one of {UNITS}, got '{self.unit}'")
        try:
            object.__setattr__(self, 'distill', normalise_distill(self.distill))
            if isinstance(self.lr, Mapping):
                object.__setattr__(self, 'lr', LRPolicy(**self.lr))
        except (ValueError, TypeError) as err:
            raise ValueError(f'{where}: {err}') from None
        if not isinstance(self.lr, LRPolicy):
            raise ValueError(f'{where}: lr must be an LRPolicy or dict, got {self.lr!r}')
        if not isinstance(self.recalibrate, bool):
            raise ValueError(f'{where}: recalibrate must be True/False, got {self.recalibrate!r}')
        if _int(self.calib_batches, f'{where}: calib_batches') < 0 or (self.recalibrate and self.calib_batches == 0):
            raise ValueError(f'{where}: calib_batches must be >= 0, and > 0 when recalibrate=True '
                             f'(got {self.calib_batches})')

    @property
    def fixed(self) -> bool:
        """True when the length is a number of epochs/iters (not until_plateau)."""
        return not isinstance(self.length, UntilPlateau)

    def quantized_stages(self) -> Tuple[str, ...]:
        """Stages with weight or activation bits below 32."""
        return tuple(s for s in STAGES if min(self.bits[s]) < MAX_BITS)

    def to_dict(self) -> Dict[str, Any]:
        """Plain config dict (json-able); :meth:`from_dict` inverts it."""
        out = dataclasses.asdict(self)
        out['bits'] = {s: list(self.bits[s]) for s in STAGES}
        out['length'] = self.length.to_dict() if isinstance(self.length, UntilPlateau) else self.length
        return out

    @classmethod
    def from_dict(cls, cfg: Mapping[str, Any]) -> 'Phase':
        """A phase from a config dict (unknown keys raise naming the key)."""
        if not isinstance(cfg, Mapping):
            raise ValueError(f'phase config must be a dict, got {cfg!r}')
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(cfg) - names)
        if unknown:
            raise ValueError(f"phase '{cfg.get('name', '?')}': unknown key(s) {unknown}; allowed {sorted(names)}")
        return cls(**cfg)


def _length_from_dict(cfg: Mapping[str, Any], where: str) -> UntilPlateau:
    if cfg.get('type') != 'until_plateau' or set(cfg) != {'type', 'patience', 'cap'}:
        raise ValueError(f"{where}: length dict must be {{'type': 'until_plateau', 'patience': P, 'cap': C}}, "
                         f'got {dict(cfg)}')
    return UntilPlateau(cfg['patience'], cfg['cap'])
