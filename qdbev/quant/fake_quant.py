"""Symmetric linear fake quantization (QD-BEV Eq. 1) with a straight-through estimator.

QD-BEV Eq. 1: ``S = 2 |r_max| / (2^k - 1)``, ``q = round(r / S)``.

As printed, ``r_max / S = 2^(k-1) - 0.5`` so ``round`` can reach ``2^(k-1)`` and the codes span
``[-2^(k-1), 2^(k-1)]``: ``2^k + 1`` levels, one more than k bits hold. qdbev keeps Eq. 1's scale and clamps the
codes to the signed two's-complement range ``[-2^(k-1), 2^(k-1) - 1]`` (what an int-k kernel stores), so a k-bit
result never has more than ``2^k`` distinct values; the largest positive input loses half a step
(``r_max -> r_max (2^k - 2) / (2^k - 1)``).

Both the fused torch kernels and the reference path compute ``x * (1 / S)`` (the reciprocal of a float32 scale,
as the kernels and integer deployments do) and round half to even, so they agree bit for bit.

Gradients (straight-through estimator): ``dy/dx = 1`` where the code lies inside the clamp range, 0 outside;
a scale that requires grad gets the LSQ gradient (Esser et al. 2020) ``round(x/S) - x/S`` inside, ``q_min`` /
``q_max`` outside, times ``grad_factor``.

``bits == 32`` means float: everything here is then the identity.
"""
from typing import Optional, Tuple, Union

import torch
from torch import Tensor

from ..device_constants import device_full

FLOAT_BITS = 32
MIN_BITS = 2
MAX_BITS = 16
SCALE_EPS = 1e-12  # floor of a scale, so an all-zero tensor (or channel) gets a finite reciprocal

ScaleLike = Union[float, Tensor]


def _cachemask_kernel(x: Tensor, scale1: Tensor, qmin: int, qmax: int) -> Tuple[Tensor, Tensor]:
    """torch's fused per-tensor fake-quant kernel with tensor qparams: ``(x_q, mask)`` for a ``[1]`` float32 scale.
    Its zero point 0 (symmetric quantization) and ``fake_quant_enabled`` flag 1 are cached per device
    (:func:`qdbev.device_constants.device_full`): no allocation, fill kernel or host-to-device copy at every call,
    which ``torch.fake_quantize_per_tensor_affine`` would make."""
    return torch._fake_quantize_per_tensor_affine_cachemask_tensor_qparams(
        x, scale1, device_full(0, (1, ), torch.int32, x.device), device_full(1, (1, ), torch.long, x.device),
        qmin, qmax)


def check_bits(bits: int, what: str = 'bits') -> int:
    """Return ``bits`` as int if it is in [2, 16] or exactly 32 (float), else raise ``ValueError``."""
    if isinstance(bits, bool) or not isinstance(bits, int):
        raise ValueError(f'{what} must be an int in [{MIN_BITS}, {MAX_BITS}] or {FLOAT_BITS} (float), got {bits!r}')
    if bits != FLOAT_BITS and not MIN_BITS <= bits <= MAX_BITS:
        raise ValueError(f'{what}={bits} is not supported: use an int in [{MIN_BITS}, {MAX_BITS}] '
                         f'or {FLOAT_BITS} to keep float')
    return bits


def qrange(bits: int) -> Tuple[int, int]:
    """Signed k-bit code range ``(-2^(k-1), 2^(k-1) - 1)`` used to clamp Eq. 1's codes."""
    check_bits(bits)
    return -(1 << (bits - 1)), (1 << (bits - 1)) - 1


def scale_from_absmax(absmax: Tensor, bits: int) -> Tensor:
    """QD-BEV Eq. 1 scale ``S = 2 |r_max| / (2^k - 1)`` from a clip value ``|r_max|`` (any shape), floored at 1e-12."""
    check_bits(bits)
    # |r_max| / ((2^k - 1) / 2) equals 2 |r_max| / (2^k - 1) wherever 2 |r_max| does not overflow (doubling and
    # halving are exact; beyond, this form stays finite), in one kernel and with one python scalar fewer
    return (absmax / ((2 ** bits - 1) / 2)).clamp_min(SCALE_EPS)


def _reduce_dims(x: Tensor, ch_axis: Optional[int]) -> Tuple[int, ...]:
    if ch_axis is None:
        return tuple(range(x.dim()))
    axis = _norm_axis(x, ch_axis)
    return tuple(d for d in range(x.dim()) if d != axis)


def _norm_axis(x: Tensor, ch_axis: int) -> int:
    if not -x.dim() <= ch_axis < x.dim():
        raise ValueError(f'ch_axis={ch_axis} is out of range for a tensor of shape {tuple(x.shape)}')
    return ch_axis % x.dim()


def symmetric_scale(x: Tensor, bits: int, ch_axis: Optional[int] = None) -> Tensor:
    """QD-BEV Eq. 1 scale of ``x`` from its largest absolute value.

    Args:
        x: any tensor, e.g. a conv weight ``[C_out, C_in, kh, kw]``.
        bits: k in [2, 16] or 32.
        ch_axis: None for one scale (0-d tensor), else the channel axis: one scale per channel, ``[C]``.
    """
    absmax = x.detach().abs().amax(dim=_reduce_dims(x, ch_axis)) if x.numel() else x.new_zeros(())
    return scale_from_absmax(absmax.float(), bits)


def _broadcast_shape(x: Tensor, axis: int) -> Tuple[int, ...]:
    shape = [1] * x.dim()
    shape[axis] = x.shape[axis]
    return tuple(shape)


def _code_dtype(qmin: int, qmax: int) -> Optional[torch.dtype]:
    """The smallest integer dtype that holds the codes ``[qmin, qmax]`` (int8 up to 8 bits, int16 up to 16)."""
    for dtype in (torch.int8, torch.int16):
        info = torch.iinfo(dtype)
        if info.min <= qmin and qmax <= info.max:
            return dtype
    return None


class _FakeQuantRef(torch.autograd.Function):
    """Reference fake quantization ``clamp(round(x * (1/S)), qmin, qmax) * S`` with STE and LSQ scale gradient."""

    @staticmethod
    def forward(ctx, x: Tensor, scale: Tensor, qmin: int, qmax: int, grad_factor: float,
                int_codes: bool = False) -> Tensor:
        inv = torch.reciprocal(scale)
        q = torch.round(x * inv)
        ctx.grad_factor = grad_factor
        ctx.scale_shape = scale.shape
        ctx.code_range = None
        wide = _code_dtype(qmin - 1, qmax + 1) if int_codes and not ctx.needs_input_grad[1] else None
        if wide is not None:
            # codes one step wider than the clamp: qmin - 1 / qmax + 1 stand for every code clipped below / above,
            # so the codes carry the straight-through mask and the backward needs nothing else (1 byte per element
            # where the mask and the codes took 2)
            wide_codes = q.clamp(qmin - 1, qmax + 1).to(wide)
            ctx.save_for_backward(wide_codes)
            ctx.code_range = (qmin, qmax)
            return wide_codes.clamp(qmin, qmax).to(x.dtype) * scale
        qc = q.clamp(qmin, qmax)
        inside = q == qc  # qmin <= q <= qmax (NaN: False): one kernel, no python bound turned into a tensor
        if ctx.needs_input_grad[1]:
            ctx.save_for_backward(inside, x, scale, inv, qc)
        else:  # no scale gradient: the straight-through mask is all the backward needs
            ctx.save_for_backward(inside)
        codes = _code_dtype(qmin, qmax) if int_codes else None
        if codes is not None:  # integers of the code range are exact in both dtypes: the same numbers
            return qc.to(codes).to(x.dtype) * scale
        return qc * scale

    @staticmethod
    def backward(ctx, grad: Tensor):
        if ctx.code_range is not None:
            (wide_codes,) = ctx.saved_tensors
            inside = (wide_codes >= ctx.code_range[0]) & (wide_codes <= ctx.code_range[1])
        else:
            inside = ctx.saved_tensors[0]
        grad_x = grad * inside  # bool promoted inside the multiply: no float copy of the mask on CUDA
        grad_scale = None
        if ctx.needs_input_grad[1]:
            _, x, scale, inv, qc = ctx.saved_tensors
            local = torch.where(inside, qc - x * inv, qc)  # LSQ: round(x/S) - x/S inside, qmin/qmax outside
            g = grad * local * ctx.grad_factor
            dims = [d for d in range(g.dim()) if scale.dim() != g.dim() or scale.shape[d] == 1]
            grad_scale = g.sum(dim=dims, keepdim=True).reshape(ctx.scale_shape) if dims else g
        return grad_x, grad_scale, None, None, None, None


def fake_quantize_reference(x: Tensor, bits: int, scale: ScaleLike, ch_axis: Optional[int] = None,
                            grad_factor: float = 1.0, int_codes: bool = False) -> Tensor:
    """Plain-PyTorch QD-BEV Eq. 1 fake quantization (same numbers and gradients as the fused kernels).

    Args:
        x: tensor of any shape.
        bits: k in [2, 16] or 32 (identity).
        scale: float / 0-d / ``[1]`` tensor, or ``[C]`` with ``ch_axis``.
        ch_axis: channel axis of a per-channel ``scale``.
        grad_factor: multiplies the scale gradient (LSQ's ``1 / sqrt(N q_max)``).
        int_codes: form the output from the integer codes held in the smallest integer dtype (int8 up to 8 bits),
            ``codes.to(float) * S``: the same numbers, one more cast. For traced graphs: the codes are then a node of
            their own, which ``torch.compile``'s partitioner can keep for backward (1 byte per element) in place of
            the float output (4 bytes) and rescale there (:func:`qdbev.quant.compile.compile_quantized`). With a
            fixed scale the codes also hold the straight-through mask (clipped codes as ``qmin - 1`` / ``qmax + 1``,
            int8 up to 7 bits), so no separate mask is kept (the gradient at a NaN input is then unspecified).
    """
    if check_bits(bits) == FLOAT_BITS:
        return x
    qmin, qmax = qrange(bits)
    s = _as_scale(scale, x, ch_axis)
    if ch_axis is not None:
        s = s.reshape(_broadcast_shape(x, _norm_axis(x, ch_axis)))
    else:
        s = s.reshape(())
    work = x if x.dtype in (torch.float32, torch.float64) else x.float()
    out = _FakeQuantRef.apply(work, s.to(work.dtype) if work.dtype == torch.float64 else s, qmin, qmax,
                              float(grad_factor), bool(int_codes))
    return out.to(x.dtype)


def _as_scale(scale: ScaleLike, x: Tensor, ch_axis: Optional[int]) -> Tensor:
    if not isinstance(scale, Tensor):
        scale = torch.tensor(float(scale), device=x.device)
    scale = scale.float() if scale.dtype != torch.float32 else scale
    if ch_axis is None:
        if scale.numel() != 1:
            raise ValueError(f'a per-tensor scale must have one element, got shape {tuple(scale.shape)}; '
                             f'pass ch_axis for per-channel scales')
    else:
        n = x.shape[_norm_axis(x, ch_axis)]
        if scale.dim() != 1 or scale.numel() != n:
            raise ValueError(f'per-channel scale must have shape [{n}] (size of axis {ch_axis} of '
                             f'{tuple(x.shape)}), got {tuple(scale.shape)}')
    return scale


def fake_quantize(x: Tensor, bits: int, scale: ScaleLike, ch_axis: Optional[int] = None,
                  grad_factor: float = 1.0, fused: bool = True) -> Tensor:
    """QD-BEV Eq. 1 fake quantization: ``clamp(round(x / S), -2^(k-1), 2^(k-1)-1) * S`` with STE.

    Uses torch's fused kernels (``fake_quantize_per_tensor_affine``, or the ``_learnable`` per-tensor /
    per-channel variants when ``scale`` requires grad) for float32 inputs, the reference path otherwise (also for a
    fixed per-channel scale: torch's fused kernel syncs with the host at every call).

    Args:
        x: tensor of any shape, e.g. activations ``[B, C, H, W]`` or a weight ``[C_out, C_in, kh, kw]``.
        bits: k in [2, 16]; 32 returns ``x`` unchanged.
        scale: S: float / 0-d / ``[1]`` tensor, or ``[C]`` with ``ch_axis``; learnable if it requires grad.
        ch_axis: channel axis for per-channel scales, None for per-tensor.
        grad_factor: multiplies the scale gradient (LSQ).
        fused: False forces the reference path.

    Returns:
        Tensor like ``x`` holding at most ``2^k`` distinct values per scale.
    """
    if check_bits(bits) == FLOAT_BITS:
        return x
    s = _as_scale(scale, x, ch_axis)
    if not fused or x.dtype != torch.float32:
        return fake_quantize_reference(x, bits, s, ch_axis, grad_factor)
    qmin, qmax = qrange(bits)
    learnable = s.requires_grad and torch.is_grad_enabled()
    if ch_axis is None:
        s1 = s.reshape(1)
        if learnable:
            zp = device_full(0, (1, ), torch.float32, x.device)
            return torch._fake_quantize_learnable_per_tensor_affine(x, s1, zp, qmin, qmax, float(grad_factor))
        return _cachemask_kernel(x, s1.detach(), qmin, qmax)[0]
    axis = _norm_axis(x, ch_axis)
    s = s.contiguous()
    if learnable:
        zp = device_full(0, tuple(s.shape), s.dtype, x.device)
        return torch._fake_quantize_learnable_per_channel_affine(x, s, zp, axis, qmin, qmax, float(grad_factor))
    # torch's fused per-channel kernel checks its zero point with two host syncs (``.item()``) at every call and on
    # CPU runs about 2x slower than the formula: the reference path computes the same numbers without either
    return fake_quantize_reference(x, bits, s, ch_axis, grad_factor)


def fake_quantize_frozen(x: Tensor, bits: int, scale: Tensor) -> Tensor:
    """QD-BEV Eq. 1 fast path: :func:`fake_quantize` of a float32 ``x`` (any shape) with a fixed per-tensor
    ``scale`` (0-d or ``[1]``, not learnable) at an already checked width k in [2, 16]: torch's fused kernel, without
    the argument checks (a calibrated activation quantizer runs this at every call)."""
    qmax = (1 << (bits - 1)) - 1
    return _cachemask_kernel(x, scale.detach().reshape(1), -qmax - 1, qmax)[0]


def fake_quantize_static(x: Tensor, scale: Tensor, qmin: int, qmax: int, grad_factor: float = 1.0,
                         learnable: bool = False) -> Tuple[Tensor, Optional[Tensor]]:
    """Forward half of a per-tensor Eq. 1 that a layer fuses into its own autograd function (no graph is built).

    Runs the kernel :func:`fake_quantize` runs on a float32 ``x`` (any shape) with a per-tensor float32 ``scale``
    (0-d or ``[1]``): the learnable one when ``learnable`` (the scale gets the LSQ gradient), else the cachemask one,
    so the numbers are the same bit for bit. Returns ``(x_q, mask)``: ``mask`` (bool like ``x``, True inside the
    clamp range) is the straight-through mask of the cachemask kernel, None for the learnable one.
    """
    s1 = scale.detach().reshape(1)
    if learnable:
        zp = device_full(0, (1, ), torch.float32, x.device)
        return torch._fake_quantize_learnable_per_tensor_affine(x, s1, zp, qmin, qmax, float(grad_factor)), None
    out, mask = _cachemask_kernel(x, s1, qmin, qmax)
    return out, mask


def fake_quantize_static_backward(grad: Tensor, x: Tensor, scale: Tensor, qmin: int, qmax: int,
                                  grad_factor: float = 1.0, mask: Optional[Tensor] = None
                                  ) -> Tuple[Tensor, Optional[Tensor]]:
    """Backward half of :func:`fake_quantize_static`: ``(grad_x, grad_scale)`` from the gradient ``grad`` of
    ``x_q`` (shape of ``x``).

    With ``mask`` (a fixed scale): ``grad_x = grad * mask`` (straight-through), ``grad_scale`` None. Without: the
    learnable kernel's own backward (the one autograd runs for :func:`fake_quantize` today, so bit for bit the same):
    straight-through ``grad_x`` and the LSQ scale gradient ``sum(grad * (round(x/S) - x/S))`` inside the clamp range,
    ``q_min`` / ``q_max`` outside, times ``grad_factor``, shaped like ``scale``.
    """
    if mask is not None:
        return grad * mask, None
    zp = device_full(0, (1, ), torch.float32, x.device)
    grad_x, grad_scale, _ = torch.ops.aten._fake_quantize_learnable_per_tensor_affine_backward(
        grad, x, scale.detach().reshape(1), zp, qmin, qmax, float(grad_factor))
    return grad_x, grad_scale.reshape(scale.shape)


def quantize_codes(x: Tensor, bits: int, scale: ScaleLike, ch_axis: Optional[int] = None) -> Tensor:
    """Integer codes ``clamp(round(x * (1/S)), qmin, qmax)`` of Eq. 1 as int32 (``codes * S == fake_quantize``)."""
    check_bits(bits)
    if bits == FLOAT_BITS:
        raise ValueError('quantize_codes: bits=32 is float, there are no integer codes')
    qmin, qmax = qrange(bits)
    s = _as_scale(scale, x, ch_axis).detach()
    s = s.reshape(_broadcast_shape(x, _norm_axis(x, ch_axis))) if ch_axis is not None else s.reshape(())
    return torch.round(x.detach().float() * torch.reciprocal(s)).clamp(qmin, qmax).to(torch.int32)
