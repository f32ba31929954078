"""Progressive-QAT schedules declared in a config (``qat_schedule = dict(...)``).

Two forms, both plain dicts (so ``--cfg-options qat_schedule.length=2`` works):

* ``dict(phases=[...], progressive=True)``: :meth:`qdbev.schedule.Schedule.to_dict` output;
* ``dict(factory='progressive_no_distill', w_bits=4, a_bits=6, length=dict(type='until_plateau', patience=2,
  cap=6), unit='epoch', lr=dict(optimizer='reset', warmup_iters=500), calib_batches=32)``: a call of one of
  :data:`FACTORIES`; ``length`` / ``distill_length`` are an int or an until_plateau dict, ``lr`` / ``distill_lr``
  an :class:`~qdbev.schedule.LRPolicy` dict.
"""
import copy
import inspect
from typing import Any, Callable, Dict, Mapping

from qdbev.schedule import (STAGES, LRPolicy, Phase, Schedule, UntilPlateau, direct_qat, progressive_no_distill,
                            qdbev_default)

LENGTH_KEYS = ('length', 'distill_length')
LR_KEYS = ('lr', 'distill_lr')


def ptq(w_bits: int = 4, a_bits: int = 6, calib_batches: int = 32) -> Schedule:
    """Post-training quantization as a schedule: the FP teacher, then every stage at W{w}A{a} calibrated on
    ``calib_batches`` batches, with no training (both phases have length 0; the hook evaluates and saves each)."""
    teacher = Phase('fp_teacher', {s: (32, 32) for s in STAGES}, length=0)
    quant = Phase(f'w{w_bits}a{a_bits}_ptq', {s: (w_bits, a_bits) for s in STAGES}, length=0, recalibrate=True,
                  calib_batches=calib_batches)
    return Schedule([teacher, quant], progressive=False)


FACTORIES: Dict[str, Callable[..., Schedule]] = {
    'qdbev_default': qdbev_default,
    'progressive_no_distill': progressive_no_distill,
    'direct_qat': direct_qat,
    'ptq': ptq,
}


def _plain(value: Any) -> Any:
    """ConfigDict / tuples -> plain dicts / lists (deep copy)."""
    if hasattr(value, 'to_dict'):
        value = value.to_dict()
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return copy.deepcopy(value)


def _length(value: Any, where: str) -> Any:
    if isinstance(value, Mapping):
        if value.get('type') != 'until_plateau' or set(value) != {'type', 'patience', 'cap'}:
            raise ValueError(f"{where} must be an int or dict(type='until_plateau', patience=P, cap=C), got {value}")
        return UntilPlateau(value['patience'], value['cap'])
    return value


def build_schedule(cfg: Any) -> Schedule:
    """A :class:`Schedule` from ``qat_schedule`` (a Schedule, a ``phases`` dict or a ``factory`` dict).

    Raises ``ValueError`` naming the offending ``qat_schedule`` key.
    """
    if isinstance(cfg, Schedule):
        return cfg
    cfg = _plain(cfg)
    if not isinstance(cfg, dict):
        raise ValueError(f'qat_schedule must be a dict (phases=[...] or factory=...), got {type(cfg).__name__}')
    if 'factory' in cfg and 'phases' in cfg:
        raise ValueError("qat_schedule: give either 'phases' or 'factory', not both (a config overriding its base's "
                         "qat_schedule needs _delete_=True)")
    if 'phases' in cfg:
        try:
            return Schedule.from_dict(cfg)
        except (ValueError, TypeError) as err:
            raise ValueError(f'qat_schedule: {err}') from None
    name = cfg.pop('factory', None)
    if name not in FACTORIES:
        raise ValueError(f'qat_schedule.factory must be one of {sorted(FACTORIES)}, got {name!r} '
                         f"(or give qat_schedule.phases)")
    factory = FACTORIES[name]
    allowed = sorted(inspect.signature(factory).parameters)
    unknown = sorted(set(cfg) - set(allowed))
    if unknown:
        raise ValueError(f"qat_schedule: unknown key(s) {unknown} for factory '{name}'; allowed {allowed}")
    for key in LENGTH_KEYS:
        if key in cfg:
            cfg[key] = _length(cfg[key], f'qat_schedule.{key}')
    for key in LR_KEYS:
        if isinstance(cfg.get(key), Mapping):
            try:
                cfg[key] = LRPolicy(**cfg[key])
            except (TypeError, ValueError) as err:
                raise ValueError(f'qat_schedule.{key}: {err}') from None
    try:
        return factory(**cfg)
    except (TypeError, ValueError) as err:
        raise ValueError(f"qat_schedule (factory '{name}'): {err}") from None
