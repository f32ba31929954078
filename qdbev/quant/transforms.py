"""Model transforms: swap float layers for fake-quantized ones, set widths per stage, calibrate, save/load.

qconfig (a plain dict, validated by :func:`check_qconfig`)::

    dict(w_bits=4, a_bits=6,                      # default widths (32 = float)
         w_observer='minmax', a_observer='ema',   # observer name or dict(type=..., **kwargs)
         per_channel=True,                        # weights: one scale per output channel (axis 0)
         w_dynamic=None,                          # weight scale from the current weights at every forward
                                                  #   (None: True for 'minmax', False otherwise)
         learnable=False,                         # LSQ-learnable scales (weights and activations)
         keep_fp=['pts_bbox_head.*.reg_branches'], # fnmatch patterns of modules kept float (with their children)
         min_bits=[dict(modules=['img_backbone.conv1', 'pts_bbox_head.cls_branches'], w_bits=8, a_bits=8)],
                                                  # floors for some layers: never narrower than these widths
                                                  #   (a quantized layer; float stays float), first rule wins
         stages=dict(backbone=['img_backbone'], neck=['img_neck'],
                     encoder=['pts_bbox_head.transformer.encoder'],
                     decoder=['pts_bbox_head.transformer.decoder']))

Swapped: modules whose type is exactly ``nn.Conv2d``, ``nn.Linear`` (and its
``NonDynamicallyQuantizableLinear``), mmcv's ``Conv2d`` / ``Linear`` wrappers, and ``nn.MultiheadAttention``.
A ConvModule is handled by swapping its inner ``conv`` child. Other subclasses (their forward may differ, e.g.
adaptive padding, deformable convs) stay float and are listed in a warning.
"""
import contextlib
import fnmatch
import warnings
from typing import Dict, Iterator, List, Optional, Sequence, Tuple

import torch
from torch import nn

from .fake_quant import check_bits
from .fake_quantizer import FakeQuantizer
from .modules import QuantConv2d, QuantLinear, QuantModule, QuantMultiheadAttention
from .observers import OBSERVERS

__all__ = ['DEFAULT_QCONFIG', 'bit_floor', 'check_qconfig', 'quantize_model', 'quant_layers', 'quantizers', 'set_bits',
           'set_mode', 'calibration', 'quant_state', 'load_quant_state', 'stage_of', 'module_matches']

DEFAULT_QCONFIG = dict(w_bits=8, a_bits=8, w_observer='minmax', a_observer='minmax', per_channel=True,
                       w_dynamic=None, learnable=False, keep_fp=[], min_bits=[], stages={})

_CONV_TYPES = ('torch.nn.modules.conv.Conv2d', 'mmcv.cnn.bricks.wrappers.Conv2d')
_LINEAR_TYPES = ('torch.nn.modules.linear.Linear', 'torch.nn.modules.linear.NonDynamicallyQuantizableLinear',
                 'mmcv.cnn.bricks.wrappers.Linear')
_MHA_TYPES = ('torch.nn.modules.activation.MultiheadAttention',)


def _type_name(m: nn.Module) -> str:
    return f'{type(m).__module__}.{type(m).__qualname__}'


def check_qconfig(qconfig: dict) -> dict:
    """Fill defaults and validate a qconfig; raises ``ValueError`` naming the offending key (``KeyError`` for an
    unknown observer name, as :func:`build_observer`)."""
    if not isinstance(qconfig, dict):
        raise ValueError(f'qconfig must be a dict, got {type(qconfig).__name__}')
    unknown = sorted(set(qconfig) - set(DEFAULT_QCONFIG))
    if unknown:
        raise ValueError(f'qconfig: unknown keys {unknown}; allowed keys: {sorted(DEFAULT_QCONFIG)}')
    cfg = {**DEFAULT_QCONFIG, **qconfig}
    check_bits(cfg['w_bits'], 'qconfig w_bits')
    check_bits(cfg['a_bits'], 'qconfig a_bits')
    if isinstance(cfg['keep_fp'], str) or not all(isinstance(p, str) for p in cfg['keep_fp']):
        raise ValueError(f"qconfig keep_fp must be a list of module-name patterns, got {cfg['keep_fp']!r}")
    for i, rule in enumerate(cfg['min_bits']):
        if not isinstance(rule, dict) or set(rule) - {'modules', 'w_bits', 'a_bits'} or not isinstance(
                rule.get('modules'), (list, tuple)) or not all(isinstance(p, str) for p in rule['modules']):
            raise ValueError(f'qconfig min_bits[{i}] must be dict(modules=[module-name patterns], w_bits=K, '
                             f'a_bits=K) (either width may be left out), got {rule!r}')
        for key in ('w_bits', 'a_bits'):
            if key in rule:
                check_bits(rule[key], f'qconfig min_bits[{i}].{key}')
    stages = cfg['stages']
    if not isinstance(stages, dict) or not all(
            isinstance(v, (list, tuple)) and all(isinstance(p, str) for p in v) for v in stages.values()):
        raise ValueError(f'qconfig stages must be a dict {{stage: [module-name prefixes]}}, got {stages!r}')
    for key in ('w_observer', 'a_observer'):
        if not isinstance(cfg[key], (str, dict)):
            raise ValueError(f'qconfig {key} must be an observer name or dict(type=...), got {cfg[key]!r}')
        name = cfg[key] if isinstance(cfg[key], str) else cfg[key].get('type')
        if name not in OBSERVERS:
            raise KeyError(f'qconfig {key}: unknown observer {name!r}; known observers: {sorted(OBSERVERS)}')
    return cfg


def module_matches(name: str, patterns: Sequence[str]) -> bool:
    """Whether module ``name`` or one of its parents matches an fnmatch pattern of ``patterns`` (qconfig ``keep_fp``,
    ``min_bits`` and ``stages`` use this rule)."""
    return any(fnmatch.fnmatchcase(name, p) or fnmatch.fnmatchcase(name, p + '.*') for p in patterns)


def stage_of(name: str, stages: Dict[str, Sequence[str]]) -> Optional[str]:
    """Stage whose prefix covers module ``name`` (the longest prefix wins), or None."""
    best, best_len = None, -1
    for stage, prefixes in stages.items():
        for p in prefixes:
            if (name == p or name.startswith(p + '.') or p == '') and len(p) > best_len:
                best, best_len = stage, len(p)
    return best


def bit_floor(name: str, min_bits: Sequence[dict]) -> Tuple[Optional[int], Optional[int]]:
    """``(w_min, a_min)`` of the first ``min_bits`` rule whose patterns match module ``name`` (None: no floor)."""
    for rule in min_bits:
        if module_matches(name, rule['modules']):
            return rule.get('w_bits'), rule.get('a_bits')
    return None, None


def _floored(bits: Optional[int], floor: Optional[int]) -> Optional[int]:
    """``bits`` raised to ``floor`` for a quantized width; None (unchanged) and 32 (float) pass through."""
    if bits is None or bits == 32 or floor is None:
        return bits
    return max(bits, floor)


def _observer_name(cfg) -> str:
    return cfg if isinstance(cfg, str) else cfg.get('type', '')


def _make_quantizers(cfg: dict, weight_ch_axis: Optional[int]) -> Tuple[FakeQuantizer, FakeQuantizer]:
    w_dynamic = cfg['w_dynamic']
    if w_dynamic is None:
        w_dynamic = _observer_name(cfg['w_observer']) == 'minmax'
    w_q = FakeQuantizer(cfg['w_bits'], cfg['w_observer'], ch_axis=weight_ch_axis, learnable=cfg['learnable'],
                        dynamic=w_dynamic, sync=False)
    return w_q, _make_act_quantizer(cfg)


def _make_act_quantizer(cfg: dict) -> FakeQuantizer:
    return FakeQuantizer(cfg['a_bits'], cfg['a_observer'], ch_axis=None, learnable=cfg['learnable'], sync=True)


def _swap(module: nn.Module, cfg: dict) -> Optional[nn.Module]:
    tname = _type_name(module)
    axis = 0 if cfg['per_channel'] else None
    if tname in _CONV_TYPES:
        return QuantConv2d.from_float(module, *_make_quantizers(cfg, axis))
    if tname in _LINEAR_TYPES:
        return QuantLinear.from_float(module, *_make_quantizers(cfg, axis))
    if tname in _MHA_TYPES and QuantMultiheadAttention.supports(module):
        w_q, a_q = _make_quantizers(cfg, axis)
        return QuantMultiheadAttention.from_float(module, w_q, a_q, _make_act_quantizer(cfg),
                                                  _make_act_quantizer(cfg))
    return None


def _unsupported(module: nn.Module) -> bool:
    if isinstance(module, QuantModule):
        return False
    if isinstance(module, nn.MultiheadAttention):
        return not (_type_name(module) in _MHA_TYPES and QuantMultiheadAttention.supports(module))
    if 'DeformConv' in type(module).__name__:  # mmcv DCN / DCNv2: weights used by a custom op
        return True
    return isinstance(module, (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)) and \
        _type_name(module) not in _CONV_TYPES + _LINEAR_TYPES


def quantize_model(model: nn.Module, qconfig: dict) -> nn.Module:
    """Swap conv / linear / multi-head-attention layers of ``model`` for fake-quantized ones, in place.

    Layers matching ``keep_fp`` stay float; layers matching a ``min_bits`` rule are never narrower than its widths
    (also in :func:`set_bits`). Each swapped layer gets ``stage`` (from ``stages``), ``qname`` and ``bit_floor``.
    Quantizers start in ``'quantize'`` mode; scales come from :func:`calibration` or the first batch.
    Returns ``model``.
    """
    cfg = check_qconfig(qconfig)
    skipped: List[str] = []

    def visit(parent: nn.Module, prefix: str) -> None:
        for child_name, child in list(parent.named_children()):
            name = f'{prefix}.{child_name}' if prefix else child_name
            if module_matches(name, cfg['keep_fp']) or isinstance(child, (QuantModule, FakeQuantizer)):
                continue
            floor = bit_floor(name, cfg['min_bits'])
            new = _swap(child, dict(cfg, w_bits=_floored(cfg['w_bits'], floor[0]),
                                    a_bits=_floored(cfg['a_bits'], floor[1])))
            if new is not None:
                new.stage, new.qname, new.bit_floor = stage_of(name, cfg['stages']), name, floor
                setattr(parent, child_name, new)
                child = new
            elif _unsupported(child):
                skipped.append(f'{name} ({type(child).__name__})')
            visit(child, name)

    _check_stages_matched(model, cfg['stages'])  # before anything is swapped
    visit(model, '')
    if skipped:
        warnings.warn(f'quantize_model: kept float (unsupported subclasses): {skipped}')
    model._qdbev_stages = {k: list(v) for k, v in cfg['stages'].items()}
    return model


def _check_stages_matched(model: nn.Module, stages: Dict[str, Sequence[str]]) -> None:
    """Refuse a ``stages`` entry whose module-name prefixes match no module of ``model`` (a stage named after
    modules the model does not have would silently never be quantized)."""
    names = [name for name, _ in model.named_modules() if name]
    empty = [stage for stage, patterns in stages.items()
             if patterns and not any(module_matches(n, patterns) for n in names)]
    if empty:
        top = [name for name, _ in model.named_children()]
        raise ValueError(f'qconfig stages.{empty[0]}: {list(stages[empty[0]])} match no module of '
                         f'{type(model).__name__}; use its module names (top level: {top[:8]})')


def quant_layers(model: nn.Module) -> Iterator[Tuple[str, QuantModule]]:
    """``(name, layer)`` for every fake-quantized layer of ``model``."""
    for name, m in model.named_modules():
        if isinstance(m, QuantModule):
            yield name, m


def quantizers(model: nn.Module) -> Iterator[Tuple[str, FakeQuantizer]]:
    """``(name, quantizer)`` for every :class:`FakeQuantizer` of ``model``."""
    for name, m in model.named_modules():
        if isinstance(m, FakeQuantizer):
            yield name, m


def set_mode(model: nn.Module, mode: str) -> None:
    """Put every quantizer in ``'observe'``, ``'quantize'`` or ``'off'`` mode."""
    for _, q in quantizers(model):
        q.set_mode(mode)


def set_bits(model: nn.Module, stage: Optional[str], w_bits: Optional[int] = None,
             a_bits: Optional[int] = None) -> List[str]:
    """Set the widths of the quantized layers of one stage (None: every quantized layer); returns their names.

    ``w_bits`` / ``a_bits``: int in [2, 16] or 32 (float); None leaves that width unchanged. A layer with a
    ``min_bits`` floor (qconfig) gets at least the floor's width unless the request is 32 (float).
    """
    if w_bits is not None:
        check_bits(w_bits, 'set_bits w_bits')
    if a_bits is not None:
        check_bits(a_bits, 'set_bits a_bits')
    layers = list(quant_layers(model))
    if stage is not None:
        known = sorted({m.stage for _, m in layers if m.stage is not None})
        if stage not in known:
            raise ValueError(f'set_bits: stage {stage!r} has no quantized layer; stages of this model: {known} '
                             f'(declared in qconfig stages)')
        layers = [(n, m) for n, m in layers if m.stage == stage]
    for _, m in layers:
        w_min, a_min = getattr(m, 'bit_floor', (None, None))
        m.set_bits(_floored(w_bits, w_min), _floored(a_bits, a_min))
    return [n for n, _ in layers]


@contextlib.contextmanager
def calibration(model: nn.Module, reset: bool = True):
    """Calibrate: inside, every quantizer observes (the model runs in float and in eval mode); on exit every
    quantizer computes its scale from its observer, switches to ``'quantize'`` and the train/eval mode returns.

    Args:
        reset: forget earlier observer statistics first.
    """
    training = model.training
    qs = [q for _, q in quantizers(model)]
    for q in qs:
        if reset:
            q.observer.reset()
        q.set_mode('observe')
    model.eval()
    try:
        yield model
    finally:
        for q in qs:
            q.freeze()
        model.train(training)


def quant_state(model: nn.Module) -> Dict[str, dict]:
    """Per quantizer: ``bits``, ``mode``, ``ch_axis``, ``scale``, ``initialized`` and observer statistics
    (tensors cloned to CPU), keyed by quantizer name. Plain data, savable with ``torch.save``."""
    out = {}
    for name, q in quantizers(model):
        out[name] = dict(bits=q.bits, mode=q.mode, ch_axis=q.ch_axis, scale=q.scale.detach().cpu().clone(),
                         initialized=bool(q.initialized),
                         observer={k: v.detach().cpu().clone() for k, v in q.observer.state_dict().items()})
    return out


def load_quant_state(model: nn.Module, state: Dict[str, dict], strict: bool = True) -> None:
    """Load :func:`quant_state` output back; with ``strict`` the quantizer names must match exactly."""
    qs = dict(quantizers(model))
    if strict:
        missing, unexpected = sorted(set(qs) - set(state)), sorted(set(state) - set(qs))
        if missing or unexpected:
            raise KeyError(f'load_quant_state: quantizers missing from the state: {missing[:5]}, '
                           f'unknown in the model: {unexpected[:5]} (same qconfig / model?)')
    for name, s in state.items():
        if name not in qs:
            continue
        q = qs[name]
        if s['ch_axis'] != q.ch_axis:
            raise ValueError(f'load_quant_state: {name} has ch_axis={q.ch_axis}, the state {s["ch_axis"]}')
        q.observer.load_state_dict(s['observer'])
        q.bits = check_bits(int(s['bits']), f'{name} bits')
        q.set_mode(s['mode'])
        with torch.no_grad():
            scale = s['scale'].to(q.scale.device)
            if isinstance(q.scale, nn.Parameter):
                q.scale.data = scale.clone()
            else:
                q.scale = scale.clone()
        q.set_initialized(bool(s['initialized']))
