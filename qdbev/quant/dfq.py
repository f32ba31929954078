"""Data-free quantization baseline (Nagel et al. 2019, "Data-Free Quantization through Weight Equalization and
Bias Correction"): cross-layer equalization and bias correction.

Cross-layer equalization of a pair ``first -> [bn] -> act -> second`` with a positively homogeneous ``act``
(ReLU, LeakyReLU, identity; not ReLU6 — the caller vouches for it): with ``r1_i`` the range of output channel
``i`` of ``first`` (the BN-folded weight ``W1_i * gamma_i / sqrt(var_i + eps)`` when a BN follows) and ``r2_i``
the range of input channel ``i`` of ``second``, ``s_i = sqrt(r1_i / r2_i)`` (Nagel Eq. 11); output channel
``i`` of ``first`` is divided by ``s_i`` (weight and bias, or BN ``gamma`` and ``beta`` when a BN follows, so no
layer is folded or renamed) and input channel ``i`` of ``second`` multiplied by ``s_i``. Both ranges become
``sqrt(r1_i r2_i)``; the float function is unchanged.
"""
import math
from typing import Dict, List, Optional, Sequence, Tuple, Union

import torch
from torch import Tensor, nn

from .fake_quant import FLOAT_BITS
from .modules import QuantConv2d, QuantLinear

__all__ = ['equalization_scales', 'cross_layer_equalize', 'relu_input_mean', 'bias_correct']

Pair = Union[Tuple[str, str], Tuple[str, str, str]]
_BN = (nn.BatchNorm1d, nn.BatchNorm2d)


def _out_ranges(first: nn.Module, bn: Optional[nn.Module]) -> Tensor:
    """Per-output-channel ``max |W1_i|`` of ``first`` (BN-folded when ``bn`` is given), ``[C]``."""
    w = first.weight.detach()
    r = w.abs().reshape(w.shape[0], -1).amax(dim=1)
    if bn is not None:
        r = r * (bn.weight.detach().abs() / torch.sqrt(bn.running_var + bn.eps))
    return r


def _in_ranges(second: nn.Module) -> Tensor:
    """Per-input-channel ``max |W2[:, i]|`` of ``second``, ``[C]``."""
    w = second.weight.detach()
    return w.abs().transpose(0, 1).reshape(w.shape[1], -1).amax(dim=1)


def equalization_scales(r1: Tensor, r2: Tensor) -> Tensor:
    """Nagel et al. 2019 Eq. 11: ``s_i = sqrt(r1_i / r2_i)`` (1 where a range is 0), ``[C]``."""
    ok = (r1 > 0) & (r2 > 0)
    return torch.where(ok, torch.sqrt(r1 / torch.where(ok, r2, torch.ones_like(r2))), torch.ones_like(r1))


def _check_pair(names: Sequence[str], first: nn.Module, bn: Optional[nn.Module], second: nn.Module) -> None:
    if not isinstance(first, (nn.Conv2d, nn.Linear)) or not isinstance(second, (nn.Conv2d, nn.Linear)):
        raise ValueError(f'cross_layer_equalize: pair {tuple(names)} must be Conv2d/Linear layers')
    if isinstance(second, nn.Conv2d) and second.groups != 1:
        raise ValueError(f'cross_layer_equalize: {names[-1]} has groups={second.groups}; only groups=1 is supported')
    if bn is not None and not isinstance(bn, _BN):
        raise ValueError(f'cross_layer_equalize: middle module {names[1]} must be BatchNorm1d/2d')
    c = first.weight.shape[0]
    if second.weight.shape[1] != c or (bn is not None and bn.num_features != c):
        raise ValueError(f'cross_layer_equalize: channel mismatch in {tuple(names)}: {names[0]} has {c} outputs, '
                         f'{names[-1]} takes {second.weight.shape[1]}')


@torch.no_grad()
def cross_layer_equalize(model: nn.Module, pairs: Sequence[Pair], iterations: int = 1) -> Dict[str, Tensor]:
    """Equalize each ``(first, second)`` or ``(first, bn, second)`` pair of module names in place.

    ``iterations`` passes over all pairs (chains sharing layers converge over passes). Returns the cumulative
    scales ``s`` ``[C]`` per pair, keyed ``'first->second'``.
    """
    modules = dict(model.named_modules())
    resolved: List[Tuple[str, nn.Module, Optional[nn.Module], nn.Module]] = []
    for pair in pairs:
        if len(pair) not in (2, 3):
            raise ValueError(f'cross_layer_equalize: a pair is (first, second) or (first, bn, second), got {pair!r}')
        missing = [n for n in pair if n not in modules]
        if missing:
            raise KeyError(f'cross_layer_equalize: no module named {missing} in the model')
        first, second = modules[pair[0]], modules[pair[-1]]
        bn = modules[pair[1]] if len(pair) == 3 else None
        _check_pair(pair, first, bn, second)
        resolved.append((f'{pair[0]}->{pair[-1]}', first, bn, second))
    total = {key: torch.ones(first.weight.shape[0]) for key, first, _, _ in resolved}
    for _ in range(iterations):
        for key, first, bn, second in resolved:
            s = equalization_scales(_out_ranges(first, bn), _in_ranges(second))
            view = (-1,) + (1,) * (first.weight.dim() - 1)
            if bn is None:
                first.weight.div_(s.reshape(view))
                if first.bias is not None:
                    first.bias.div_(s)
            else:
                bn.weight.div_(s)
                bn.bias.div_(s)
            second.weight.mul_(s.reshape((1, -1) + (1,) * (second.weight.dim() - 2)))
            total[key] = total[key] * s.cpu()
    return total


def relu_input_mean(bn: nn.Module, relu: bool = True) -> Tensor:
    """Data-free expected input ``[C]`` of the layer after ``bn`` (-> ReLU): BN outputs ~ N(beta, gamma^2), so
    ``E[ReLU(x)] = beta Phi(beta/|gamma|) + |gamma| phi(beta/|gamma|)`` (Nagel et al. 2019, Sec. 4.2); ``beta``
    without ReLU."""
    beta, gamma = bn.bias.detach(), bn.weight.detach().abs().clamp_min(1e-12)
    if not relu:
        return beta.clone()
    z = beta / gamma
    cdf = 0.5 * (1.0 + torch.erf(z / math.sqrt(2.0)))
    pdf = torch.exp(-0.5 * z * z) / math.sqrt(2.0 * math.pi)
    return beta * cdf + gamma * pdf


@torch.no_grad()
def bias_correct(layer: Union[QuantConv2d, QuantLinear], input_mean: Tensor) -> Tensor:
    """Bias correction: ``b <- b - E[(W_q - W) x] = b - eps @ E[x]`` with ``eps = w_quant(W) - W``.

    Args:
        layer: a :class:`QuantConv2d` / :class:`QuantLinear` (weight quantized at its current width).
        input_mean: expected input per input channel ``[C_in]`` (data: the calibration mean; data-free:
            :func:`relu_input_mean`). For convs the mean is taken as constant over space (padding ignored).

    Returns:
        The correction subtracted from the bias ``[C_out]`` (a zero bias is created if the layer had none).
    """
    if not isinstance(layer, (QuantConv2d, QuantLinear)):
        raise ValueError(f'bias_correct: expected QuantConv2d/QuantLinear, got {type(layer).__name__}')
    if layer.w_bits == FLOAT_BITS:
        return torch.zeros(layer.weight.shape[0], device=layer.weight.device)
    mode = layer.w_quant.mode
    layer.w_quant.set_mode('quantize')
    try:
        eps = layer.w_quant(layer.weight.detach()) - layer.weight.detach()
    finally:
        layer.w_quant.set_mode(mode)
    mean = input_mean.to(eps)
    if isinstance(layer, QuantLinear):
        if mean.shape != (layer.in_features,):
            raise ValueError(f'bias_correct: input_mean must be [{layer.in_features}], got {tuple(mean.shape)}')
        corr = eps @ mean
    else:
        if mean.shape != (layer.in_channels,):
            raise ValueError(f'bias_correct: input_mean must be [{layer.in_channels}], got {tuple(mean.shape)}')
        g = layer.groups
        eps_sum = eps.sum(dim=(2, 3)).reshape(g, layer.out_channels // g, layer.in_channels // g)
        corr = torch.einsum('goc,gc->go', eps_sum, mean.reshape(g, -1)).reshape(-1)
    if layer.bias is None:
        layer.bias = nn.Parameter(torch.zeros_like(corr))
    layer.bias.sub_(corr)
    return corr
