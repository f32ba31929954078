"""Analysis helpers for the PTQ tool: per-layer weight quantization error, per-channel fallback, scale conflicts."""
import math
import statistics
from typing import Dict, List, Optional, Sequence, Tuple

import torch
from torch import Tensor, nn

from .fake_quant import FLOAT_BITS, fake_quantize, symmetric_scale
from .fake_quantizer import FakeQuantizer
from .transforms import quant_layers

__all__ = ['weight_quant_error', 'layer_weight_errors', 'per_channel_fallback', 'record_activation_ranges',
           'find_scale_conflicts']


def weight_quant_error(w: Tensor, bits: int, ch_axis: Optional[int] = None) -> float:
    """Mean over output channels (axis 0) of ``||W_c - Q(W_c)||^2 / ||W_c||^2``, Q = Eq. 1 with the minmax scale
    per tensor (``ch_axis=None``) or per channel. Normalising per channel makes channels that a shared scale
    rounds to zero count, however small they are; a 1-D tensor is one channel."""
    if bits == FLOAT_BITS:
        return 0.0
    w = w.detach().float()
    err = (w - fake_quantize(w, bits, symmetric_scale(w, bits, ch_axis), ch_axis)).pow(2)
    rows = w.reshape(w.shape[0], -1) if w.dim() > 1 else w.reshape(1, -1)
    err_rows = err.reshape(rows.shape)
    norm = rows.pow(2).sum(dim=1)
    valid = norm > 0
    if not bool(valid.any()):
        return 0.0
    return float((err_rows.sum(dim=1)[valid] / norm[valid]).mean())


def layer_weight_errors(model: nn.Module, per_channel: bool = False) -> Dict[str, float]:
    """:func:`weight_quant_error` of every quantized weight at its layer's width, keyed ``'layer.param'``."""
    out = {}
    for name, layer in quant_layers(model):
        for pname, w, q in layer.weight_quantizers():
            out[f'{name}.{pname}'] = weight_quant_error(w, q.bits, 0 if per_channel else None)
    return out


def per_channel_fallback(model: nn.Module, ratio: float = 10.0) -> Dict[str, Tuple[float, float]]:
    """Two passes: per-tensor weight errors of all quantized layers, then the layers whose error exceeds
    ``ratio`` times the median get a per-channel weight quantizer (same width / observer / mode, uncalibrated
    for non-dynamic ones). Returns ``{layer name: (per-tensor error, per-channel error)}`` of the switched ones.
    """
    errors, weights = {}, {}
    for name, layer in quant_layers(model):
        for _, w, q in layer.weight_quantizers():
            if q is layer.w_quant and q.bits != FLOAT_BITS and q.ch_axis is None:
                errors[name], weights[name] = weight_quant_error(w, q.bits, None), w
    if not errors:
        return {}
    limit = ratio * max(statistics.median(errors.values()), 1e-30)
    layers = dict(quant_layers(model))
    switched = {}
    for name, err in errors.items():
        if err <= limit:
            continue
        layer = layers[name]
        cfg = layer.w_quant.config()
        cfg['observer'] = {**cfg['observer'], 'ch_axis': 0}
        cfg['ch_axis'] = 0
        layer.w_quant = FakeQuantizer(**cfg).to(weights[name].device)
        switched[name] = (err, weight_quant_error(weights[name], layer.w_quant.bits, 0))
    return switched


def run_forward(model: nn.Module, inputs):
    """``model``'s output on ``inputs``: keyword arguments (a dict), positional ones (a tuple or list) or one input."""
    if isinstance(inputs, dict):
        return model(**inputs)
    if isinstance(inputs, (tuple, list)):
        return model(*inputs)
    return model(inputs)


@torch.no_grad()
def record_activation_ranges(model: nn.Module, inputs, names: Optional[Sequence[str]] = None
                             ) -> Dict[str, Tuple[float, float]]:
    """Run ``inputs`` (tensor / tuple of args / dict of kwargs) and return ``{module name: (min, max)}`` of the
    tensor outputs of the named modules (all leaf modules when ``names`` is None), over all their calls."""
    modules = dict(model.named_modules())
    if names is None:
        names = [n for n, m in modules.items() if n and not any(True for _ in m.children())]
    missing = [n for n in names if n not in modules]
    if missing:
        raise KeyError(f'record_activation_ranges: no module named {missing[:5]}')
    ranges: Dict[str, Tuple[float, float]] = {}

    def make_hook(name):
        def hook(mod, inp, out):
            if torch.is_tensor(out) and out.numel():
                lo, hi = float(out.min()), float(out.max())
                if name in ranges:
                    lo, hi = min(lo, ranges[name][0]), max(hi, ranges[name][1])
                ranges[name] = (lo, hi)
        return hook

    handles = [modules[n].register_forward_hook(make_hook(n)) for n in names]
    try:
        run_forward(model, inputs)
    finally:
        for h in handles:
            h.remove()
    return ranges


def find_scale_conflicts(ranges: Dict[str, Tuple[float, float]], groups: Sequence[Sequence[str]],
                         ratio: float = 8.0) -> List[dict]:
    """Groups of tensors that meet in one cat / add sharing a single scale while their ranges differ a lot.

    Args:
        ranges: ``{name: (min, max)}`` recorded activation ranges (e.g. :func:`record_activation_ranges`).
        groups: each a list of names whose tensors are concatenated / added under one scale.
        ratio: report a group when ``max |r| / min |r|`` over its members exceeds this.

    Returns:
        ``[dict(members, absmax, ratio, lost_bits)]`` sorted by ratio (largest first); ``lost_bits`` =
        ``log2(ratio)``: the levels the smallest member loses to the shared scale.
    """
    out = []
    for group in groups:
        missing = [n for n in group if n not in ranges]
        if missing:
            raise KeyError(f'find_scale_conflicts: no recorded range for {missing}')
        absmax = {n: max(abs(ranges[n][0]), abs(ranges[n][1])) for n in group}
        lo, hi = min(absmax.values()), max(absmax.values())
        r = hi / lo if lo > 0 else math.inf
        if r > ratio:
            out.append(dict(members=list(group), absmax=absmax, ratio=r, lost_bits=math.log2(r)))
    return sorted(out, key=lambda d: -d['ratio'])
