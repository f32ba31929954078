"""Size, MACs and BOPS of a (fake-)quantized model, per layer, per stage and in total.

Counting rules:
    params   every parameter, once (shared parameters are counted once), except those of modules marked
             ``train_only = True`` (used only while training, e.g. Group DETR's extra query groups): a deployed
             model does not hold them.
    size_mb  bytes / 2^20: a quantized layer's weight at its ``w_bits``, its bias at 32 bits (int32
             accumulators); every other parameter (float-kept layers, norms, embeddings) at 32 bits.
    MACs     measured with forward hooks during one forward of ``inputs`` (a module called twice counts twice):
             ``ConvNd``: ``out.numel() * C_in / groups * prod(kernel)``; ``Linear``: ``out.numel() * in_features``;
             ``nn.MultiheadAttention``: in-projections + ``q k^T`` + ``attn v`` (+ out-projection for the stock
             module, whose ``out_proj`` forward is never called; :class:`QuantMultiheadAttention` calls it, so the
             Linear hook counts it). Other matmul-like ops are counted by estimators users register with
             :func:`register_mac_estimator`.
    BOPS     ``MACs * w_bits * a_bits`` with the widths the op runs at (32 for float operands; the attention
             matmuls ``q k^T`` / ``attn v`` are float x float).
"""
from collections import OrderedDict
from typing import Callable, Dict, List, Optional, Sequence, Tuple, Type

import torch
from torch import Tensor, nn

from .analysis import run_forward
from .fake_quant import FLOAT_BITS
from .modules import QuantModule, QuantMultiheadAttention
from .transforms import quantizers, stage_of

__all__ = ['register_mac_estimator', 'MAC_ESTIMATORS', 'report', 'format_report']

MacTerms = List[Tuple[int, int, int]]  # (MACs, bits of operand 1, bits of operand 2)
MacEstimator = Callable[[nn.Module, tuple, dict, object], MacTerms]
MAC_ESTIMATORS: 'OrderedDict[Type[nn.Module], MacEstimator]' = OrderedDict()
MB = float(2 ** 20)


def register_mac_estimator(module_type: Type[nn.Module]) -> Callable[[MacEstimator], MacEstimator]:
    """Register ``fn(module, args, kwargs, output) -> [(macs, bits_a, bits_b), ...]`` for ``module_type``.

    ``args`` / ``kwargs`` are the positional / keyword inputs of the module's forward, ``output`` its output.

    The most specific registered type of a module is used (registration order breaks ties), so a user estimator
    for e.g. mmcv's ``MultiScaleDeformableAttention`` (its sampling, ~``num_query * heads * levels * points * 4
    * head_dim`` MACs at float x float) adds to the Linear hooks of its projections.
    """
    def wrap(fn: MacEstimator) -> MacEstimator:
        MAC_ESTIMATORS[module_type] = fn
        return fn
    return wrap


def _bits(module: nn.Module) -> Tuple[int, int]:
    if isinstance(module, QuantModule):
        return module.w_bits, module.a_bits
    return FLOAT_BITS, FLOAT_BITS


@register_mac_estimator(nn.modules.conv._ConvNd)
def _conv_macs(module: nn.modules.conv._ConvNd, args: tuple, kwargs: dict, output: Tensor) -> MacTerms:
    k = 1
    for s in module.kernel_size:
        k *= s
    return [(output.numel() * (module.in_channels // module.groups) * k, *_bits(module))]


@register_mac_estimator(nn.Linear)
def _linear_macs(module: nn.Linear, args: tuple, kwargs: dict, output: Tensor) -> MacTerms:
    return [(output.numel() * module.in_features, *_bits(module))]


@register_mac_estimator(nn.MultiheadAttention)
def _mha_macs(module: nn.MultiheadAttention, args: tuple, kwargs: dict, output) -> MacTerms:
    named = dict(zip(('query', 'key'), args), **kwargs)
    query, key = named['query'], named['key']
    e = module.embed_dim
    if query.dim() == 2:
        l_len, s_len, b = query.shape[0], key.shape[0], 1
    elif module.batch_first:
        b, l_len, s_len = query.shape[0], query.shape[1], key.shape[1]
    else:
        l_len, b, s_len = query.shape[0], query.shape[1], key.shape[0]
    w_bits, a_bits = _bits(module)
    terms = [(b * (l_len + 2 * s_len) * e * e, w_bits, a_bits),  # q, k, v projections
             (2 * b * l_len * s_len * e, FLOAT_BITS, FLOAT_BITS)]  # q k^T and attn v over all heads
    if not isinstance(module, QuantMultiheadAttention):
        terms.append((b * l_len * e * e, FLOAT_BITS, FLOAT_BITS))  # out_proj, applied with F.linear inside
    return terms


def _estimator(module: nn.Module) -> Optional[MacEstimator]:
    best, best_depth = None, -1
    for t, fn in MAC_ESTIMATORS.items():
        if isinstance(module, t):
            depth = type(module).__mro__.index(t)
            if best is None or depth < best_depth:
                best, best_depth = fn, depth
    return best


def _empty() -> Dict[str, float]:
    return dict(params=0, size_mb=0.0, macs=0, bops=0)


def report(model: nn.Module, inputs, stages: Optional[Dict[str, Sequence[str]]] = None) -> dict:
    """Run one forward of ``inputs`` (a tensor, a tuple of args or a dict of kwargs) and count.

    Quantizers are switched off during the forward (nothing is observed or initialised) and restored after.

    Args:
        stages: ``{stage: [module-name prefixes]}``; default: the qconfig stages given to ``quantize_model``.

    Returns:
        ``dict(layers=[row, ...], stages={stage: totals}, total=totals)``; a row has ``name``, ``type``,
        ``stage``, ``params``, ``w_bits``, ``a_bits``, ``size_mb``, ``macs``, ``bops``; totals have ``params``,
        ``size_mb``, ``macs``, ``bops``. Parameters outside counted layers form the row ``'(other parameters)'``.
    """
    stages = stages if stages is not None else getattr(model, '_qdbev_stages', {})
    rows: 'OrderedDict[str, dict]' = OrderedDict()
    seen_params = {id(p) for m in model.modules() if getattr(m, 'train_only', False) for p in m.parameters()}
    handles = []

    for name, m in model.named_modules():
        fn = _estimator(m)
        if fn is None:
            continue
        w_bits, a_bits = _bits(m)
        params, size_bits = 0, 0
        for pname, p in m.named_parameters(recurse=False):
            if id(p) in seen_params:
                continue
            seen_params.add(id(p))
            params += p.numel()
            is_weight = isinstance(m, QuantModule) and pname in {n for n, _, _ in m.weight_quantizers()}
            size_bits += p.numel() * (w_bits if is_weight else FLOAT_BITS)
        rows[name] = dict(name=name, type=type(m).__name__, stage=stage_of(name, stages), params=params,
                          w_bits=w_bits, a_bits=a_bits, size_mb=size_bits / 8 / MB, macs=0, bops=0)

        def hook(mod, args, kwargs, out, row=rows[name], fn=fn):
            for macs, b1, b2 in fn(mod, args, kwargs, out):
                row['macs'] += int(macs)
                row['bops'] += int(macs) * b1 * b2

        handles.append(m.register_forward_hook(hook, with_kwargs=True))

    other = 0
    for p in model.parameters():
        if id(p) not in seen_params:
            seen_params.add(id(p))
            other += p.numel()

    modes = [(q, q.mode) for _, q in quantizers(model)]
    for q, _ in modes:
        q.set_mode('off')
    try:
        with torch.no_grad():
            run_forward(model, inputs)
    finally:
        for h in handles:
            h.remove()
        for q, mode in modes:
            q.set_mode(mode)

    layers = list(rows.values())
    if other:
        layers.append(dict(name='(other parameters)', type='-', stage=None, params=other, w_bits=FLOAT_BITS,
                           a_bits=FLOAT_BITS, size_mb=other * FLOAT_BITS / 8 / MB, macs=0, bops=0))
    by_stage: Dict[str, Dict[str, float]] = OrderedDict()
    total = _empty()
    for row in layers:
        key = row['stage'] if row['stage'] is not None else 'other'
        acc = by_stage.setdefault(key, _empty())
        for k in ('params', 'size_mb', 'macs', 'bops'):
            acc[k] += row[k]
            total[k] += row[k]
    return dict(layers=layers, stages=dict(by_stage), total=total)


def format_report(rep: dict, layers: bool = False) -> str:
    """Plain-text table of a :func:`report` result: per stage and total (and per layer with ``layers``)."""
    head = f"{'name':<48} {'params':>12} {'W/A':>7} {'size MB':>9} {'GMACs':>10} {'GBOPS':>12}"
    lines = [head, '-' * len(head)]
    if layers:
        for r in rep['layers']:
            lines.append(f"{r['name'][:48]:<48} {r['params']:>12,d} {r['w_bits']:>3}/{r['a_bits']:<3} "
                         f"{r['size_mb']:>9.3f} {r['macs'] / 1e9:>10.4f} {r['bops'] / 1e9:>12.3f}")
        lines.append('-' * len(head))
    for name, t in list(rep['stages'].items()) + [('total', rep['total'])]:
        lines.append(f"{name:<48} {t['params']:>12,d} {'':>7} {t['size_mb']:>9.3f} {t['macs'] / 1e9:>10.4f} "
                     f"{t['bops'] / 1e9:>12.3f}")
    return '\n'.join(lines)
