"""Fake-quantized layers: subclasses of ``nn.Conv2d`` / ``nn.Linear`` / ``nn.MultiheadAttention``.

Each carries a weight quantizer ``w_quant`` and an input-activation quantizer ``a_quant`` (attention also
``k_quant`` / ``v_quant`` for its key and value inputs). Being subclasses, ``isinstance`` checks in mmcv/mmdet
keep working and the state dict keeps ``weight`` / ``bias`` (``in_proj_weight`` ...) under the same names; the
quantizers add ``w_quant.*`` / ``a_quant.*`` keys. ``from_float`` shares the float module's parameters (no copy).

Training memory: ``conv(a_quant(x), ...)`` written as two autograd ops keeps, per layer, the fake-quantized input
``x_q`` (saved by the conv for its weight gradient) and the quantizer's straight-through mask, next to the float
``x`` that the layer before usually saves already. When the activation quantizer has a fixed per-tensor scale
(:meth:`FakeQuantizer.static_qparams`) and autograd records, the layers run quantizer and conv / linear as one
autograd function that saves only ``x`` (the caller's tensor), the quantized weight and the scale, and recomputes
``x_q`` and the mask in backward; outputs and gradients are the same numbers. ``layer.recompute_act_quant = False``
keeps the two-op path.
"""
import math
from typing import Iterator, List, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.autograd.function import once_differentiable

from .fake_quant import fake_quantize_static, fake_quantize_static_backward
from .fake_quantizer import FakeQuantizer

__all__ = ['QuantModule', 'QuantConv2d', 'QuantLinear', 'QuantMultiheadAttention']


def _autocast_on(x: Tensor) -> bool:
    try:
        return torch.is_autocast_enabled(x.device.type)
    except TypeError:  # torch < 2.4: no device argument
        return torch.is_autocast_enabled() or torch.is_autocast_cpu_enabled()


def _bypassable(quantizer: nn.Module) -> bool:
    """Whether a layer may compute what ``quantizer`` does without calling it: a :class:`FakeQuantizer` (not an
    export stand-in in its place) without forward hooks (a hooked quantizer must still be called)."""
    return isinstance(quantizer, FakeQuantizer) and not quantizer._forward_hooks and not quantizer._forward_pre_hooks


def _static_act_qparams(quantizer: FakeQuantizer, x: Tensor, *params: Optional[Tensor]
                        ) -> Optional[Tuple[Tensor, int, int, float]]:
    """``quantizer``'s fixed per-tensor qparams for the fused layer functions below, or None where the two-op path
    must run: autograd off or nothing to differentiate (``x``, ``params``, the scale), autocast (the layer would run
    in another dtype than the recomputation), forward hooks on the quantizer (the fused path does not call it), a
    module other than a :class:`FakeQuantizer` in its place, and every state :meth:`FakeQuantizer.static_qparams`
    refuses; and under ``torch.compile`` (the quantizer's traceable forward, which inductor fuses itself: torch's
    fused fake-quant kernels inside these functions have no fake-tensor support)."""
    if not torch.is_grad_enabled() or torch.compiler.is_compiling() or not _bypassable(quantizer) \
            or _autocast_on(x):
        return None
    qp = quantizer.static_qparams(x)
    if qp is None or not (x.requires_grad or qp[0].requires_grad or any(p is not None and p.requires_grad
                                                                        for p in params)):
        return None
    return qp


def _inference_inputs(layer: 'QuantModule', x: Tensor) -> Optional[Tuple[Tensor, Tensor]]:
    """``(a_quant(x), w_quant(weight))`` without autograd and without calling the two quantizer modules (at batch 1
    their ``__call__`` costs about as much as the fused kernel: inference is host-bound), or None where the
    modules must run: autograd on, hooks on a quantizer, another module in a quantizer's place (export stand-ins),
    or a state :meth:`FakeQuantizer.inference_output` does not cover (e.g. the first call for a new weight, which
    fills the weight quantizer's cache)."""
    if torch.is_grad_enabled() or torch.compiler.is_compiling():  # compiled: the quantizers' traceable forward
        return None
    a, w = layer.a_quant, layer.w_quant
    if not (_bypassable(a) and _bypassable(w)):
        return None
    w_q = w.inference_output(layer.weight)
    x_q = None if w_q is None else a.inference_output(x)
    return None if x_q is None else (x_q, w_q)


def _not_a_view(y: Tensor) -> Tensor:
    """``y`` as a tensor autograd does not track as a view (same storage, no copy): the output of a custom autograd
    function that is a view of a tensor made inside it may not be modified in place (e.g. an inplace ReLU after a
    linear layer); ``_unsafe_view`` is what ``torch.matmul`` returns for the same reason."""
    return torch.ops.aten._unsafe_view(y, y.shape) if y._is_view() else y


class _ActQuantConv2dFn(torch.autograd.Function):
    """``conv2d(fake_quantize(x), weight, bias)`` (zero padding, x ``[B, C_in, H, W]``) saving only ``x``, the
    (already fake-quantized) ``weight`` and the scale; backward recomputes ``x_q`` and the straight-through mask."""

    @staticmethod
    def forward(ctx, x: Tensor, weight: Tensor, bias: Optional[Tensor], scale: Tensor, qmin: int, qmax: int,
                grad_factor: float, stride, padding, dilation, groups: int) -> Tensor:
        learnable = ctx.needs_input_grad[3]
        x_q, _ = fake_quantize_static(x, scale, qmin, qmax, grad_factor, learnable)
        ctx.save_for_backward(x, weight, scale)
        ctx.args = (qmin, qmax, grad_factor, learnable, None if bias is None else list(bias.shape), stride, padding,
                    dilation, groups)
        return _not_a_view(F.conv2d(x_q, weight, bias, stride, padding, dilation, groups))

    @staticmethod
    @once_differentiable
    def backward(ctx, grad: Tensor):
        x, weight, scale = ctx.saved_tensors
        qmin, qmax, grad_factor, learnable, bias_sizes, stride, padding, dilation, groups = ctx.args
        need_x, need_w, need_b = ctx.needs_input_grad[:3]
        x_q, mask = fake_quantize_static(x, scale, qmin, qmax, grad_factor, learnable)
        # the op autograd runs for F.conv2d, with the same arguments: the same numbers as the two-op path
        grad_xq, grad_w, grad_b = torch.ops.aten.convolution_backward(
            grad, x_q, weight, bias_sizes, stride, padding, dilation, False, [0, 0], groups,
            [need_x or learnable, need_w, need_b])
        del x_q
        grad_x = grad_s = None
        if grad_xq is not None:
            grad_x, grad_s = fake_quantize_static_backward(grad_xq, x, scale, qmin, qmax, grad_factor, mask)
        return (grad_x if need_x else None), grad_w, grad_b, grad_s, None, None, None, None, None, None, None


class _ActQuantLinearFn(torch.autograd.Function):
    """``linear(fake_quantize(x), weight, bias)`` (x ``[..., in_features]``) saving only ``x``, the (already
    fake-quantized) ``weight`` and the scale; backward recomputes ``x_q`` and the straight-through mask."""

    @staticmethod
    def forward(ctx, x: Tensor, weight: Tensor, bias: Optional[Tensor], scale: Tensor, qmin: int, qmax: int,
                grad_factor: float) -> Tensor:
        learnable = ctx.needs_input_grad[3]
        x_q, _ = fake_quantize_static(x, scale, qmin, qmax, grad_factor, learnable)
        ctx.save_for_backward(x, weight, scale)
        ctx.args = (qmin, qmax, grad_factor, learnable)
        return _not_a_view(F.linear(x_q, weight, bias))  # [B, L, in] + bias: a view of a [B*L, out] result

    @staticmethod
    @once_differentiable
    def backward(ctx, grad: Tensor):
        x, weight, scale = ctx.saved_tensors
        qmin, qmax, grad_factor, learnable = ctx.args
        need_x, need_w, need_b = ctx.needs_input_grad[:3]
        x_q, mask = fake_quantize_static(x, scale, qmin, qmax, grad_factor, learnable)
        g2 = grad.reshape(-1, grad.shape[-1])  # [N, out]; the formulas of torch's mm / addmm backward
        grad_w = g2.t().mm(x_q.reshape(-1, x_q.shape[-1])) if need_w else None
        grad_b = g2.sum(0) if need_b else None
        del x_q
        grad_x = grad_s = None
        if need_x or learnable:
            grad_xq = g2.mm(weight).reshape(x.shape)
            grad_x, grad_s = fake_quantize_static_backward(grad_xq, x, scale, qmin, qmax, grad_factor, mask)
        return (grad_x if need_x else None), grad_w, grad_b, grad_s, None, None, None


def quant_linear(quantizer: FakeQuantizer, x: Tensor, weight: Tensor, bias: Optional[Tensor],
                 recompute: bool = True) -> Tensor:
    """``F.linear(quantizer(x), weight, bias)``, x ``[..., in_features]``: one autograd function that recomputes
    ``quantizer(x)`` in backward when ``recompute`` and the quantizer has a fixed per-tensor scale (see the module
    docstring)."""
    qp = _static_act_qparams(quantizer, x, weight, bias) if recompute and x.dim() >= 2 else None
    if qp is None:
        return F.linear(quantizer(x), weight, bias)
    return _ActQuantLinearFn.apply(x, weight, bias, *qp)


class QuantModule:
    """Mixin of the quantized layers: ``stage`` / ``qname`` tags and access to the quantizers."""
    stage: Optional[str] = None  # 'backbone' / 'neck' / 'encoder' / 'decoder' / None, set by quantize_model
    qname: str = ''  # module name at quantize_model time
    act_quantizer_names: Tuple[str, ...] = ('a_quant',)
    recompute_act_quant: bool = True  # False: the two-op path (autograd keeps x_q and the mask)

    def weight_quantizers(self) -> Iterator[Tuple[str, Tensor, FakeQuantizer]]:
        """``(param_name, weight, quantizer)`` for every quantized weight of the layer."""
        yield 'weight', self.weight, self.w_quant

    def act_quantizers(self) -> List[FakeQuantizer]:
        return [getattr(self, n) for n in self.act_quantizer_names]

    @property
    def w_bits(self) -> int:
        return self.w_quant.bits

    @property
    def a_bits(self) -> int:
        return self.a_quant.bits

    def set_bits(self, w_bits: Optional[int] = None, a_bits: Optional[int] = None) -> None:
        """Set the weight and/or activation width (None keeps it; 32 = float)."""
        if w_bits is not None:
            self.w_quant.set_bits(w_bits)
        if a_bits is not None:
            for q in self.act_quantizers():
                q.set_bits(a_bits)

    def _attach(self, w_quant: FakeQuantizer, a_quant: FakeQuantizer, device: torch.device) -> None:
        self.w_quant = w_quant.to(device)
        self.a_quant = a_quant.to(device)


class QuantConv2d(nn.Conv2d, QuantModule):
    """``nn.Conv2d`` computing ``conv(a_quant(x), w_quant(weight), bias)``; x ``[B, C_in, H, W]``."""

    @classmethod
    def from_float(cls, conv: nn.Conv2d, w_quant: FakeQuantizer, a_quant: FakeQuantizer) -> 'QuantConv2d':
        q = cls(conv.in_channels, conv.out_channels, conv.kernel_size, stride=conv.stride, padding=conv.padding,
                dilation=conv.dilation, groups=conv.groups, bias=conv.bias is not None,
                padding_mode=conv.padding_mode, device='meta')
        q.weight, q.bias = conv.weight, conv.bias
        q.train(conv.training)
        q._attach(w_quant, a_quant, conv.weight.device)
        return q

    def forward(self, x: Tensor) -> Tensor:
        fast = _inference_inputs(self, x)
        if fast is not None:
            return self._conv_forward(fast[0], fast[1], self.bias)
        qp = None
        if self.recompute_act_quant and self.padding_mode == 'zeros' and not isinstance(self.padding, str) \
                and x.dim() == 4:
            qp = _static_act_qparams(self.a_quant, x, self.weight, self.bias)
        if qp is None:
            return self._conv_forward(self.a_quant(x), self.w_quant(self.weight), self.bias)
        return _ActQuantConv2dFn.apply(x, self.w_quant(self.weight), self.bias, *qp, self.stride, self.padding,
                                       self.dilation, self.groups)


class QuantLinear(nn.Linear, QuantModule):
    """``nn.Linear`` computing ``linear(a_quant(x), w_quant(weight), bias)``; x ``[..., in_features]``."""

    @classmethod
    def from_float(cls, linear: nn.Linear, w_quant: FakeQuantizer, a_quant: FakeQuantizer) -> 'QuantLinear':
        q = cls(linear.in_features, linear.out_features, bias=linear.bias is not None, device='meta')
        q.weight, q.bias = linear.weight, linear.bias
        q.train(linear.training)
        q._attach(w_quant, a_quant, linear.weight.device)
        return q

    def forward(self, x: Tensor) -> Tensor:
        fast = _inference_inputs(self, x)
        if fast is not None:
            return F.linear(fast[0], fast[1], self.bias)
        return quant_linear(self.a_quant, x, self.w_quant(self.weight), self.bias, self.recompute_act_quant)


class QuantMultiheadAttention(nn.MultiheadAttention, QuantModule):
    """``nn.MultiheadAttention`` with fake-quantized in-projection weights and query/key/value inputs.

    The forward is written out (``F.multi_head_attention_forward`` cannot take quantized inputs of its
    out-projection): projections, ``softmax(q k^T / sqrt(d) + mask) v`` per head, then ``self.out_proj`` as a
    module call, so a :class:`QuantLinear` ``out_proj`` quantizes its input and weight. The attention matmuls
    themselves (``q k^T``, ``attn v``) stay float. Supported: packed in-projection (``kdim == vdim ==
    embed_dim``), no ``bias_k`` / ``bias_v``, no ``add_zero_attn`` (checked by :meth:`supports`).
    """
    act_quantizer_names = ('a_quant', 'k_quant', 'v_quant')

    @staticmethod
    def supports(mha: nn.MultiheadAttention) -> bool:
        return mha._qkv_same_embed_dim and mha.bias_k is None and not mha.add_zero_attn

    @classmethod
    def from_float(cls, mha: nn.MultiheadAttention, w_quant: FakeQuantizer, a_quant: FakeQuantizer,
                   k_quant: FakeQuantizer, v_quant: FakeQuantizer) -> 'QuantMultiheadAttention':
        if not cls.supports(mha):
            raise ValueError('QuantMultiheadAttention needs kdim == vdim == embed_dim, no bias_k/bias_v and '
                             'add_zero_attn=False; keep this attention float (qconfig keep_fp)')
        q = cls(mha.embed_dim, mha.num_heads, dropout=mha.dropout, bias=mha.in_proj_bias is not None,
                batch_first=mha.batch_first, device='meta')
        q.in_proj_weight, q.in_proj_bias = mha.in_proj_weight, mha.in_proj_bias
        q.out_proj = mha.out_proj
        q.train(mha.training)
        dev = mha.in_proj_weight.device
        q._attach(w_quant, a_quant, dev)
        q.k_quant, q.v_quant = k_quant.to(dev), v_quant.to(dev)
        return q

    def weight_quantizers(self) -> Iterator[Tuple[str, Tensor, FakeQuantizer]]:
        yield 'in_proj_weight', self.in_proj_weight, self.w_quant

    def forward(self, query: Tensor, key: Tensor, value: Tensor, key_padding_mask: Optional[Tensor] = None,
                need_weights: bool = True, attn_mask: Optional[Tensor] = None, average_attn_weights: bool = True,
                is_causal: bool = False) -> Tuple[Tensor, Optional[Tensor]]:
        """Same contract as ``nn.MultiheadAttention.forward``: query ``[L, B, E]`` (``[B, L, E]`` if batch_first,
        ``[L, E]`` unbatched), key/value ``[S, B, E]``; returns ``(out [L, B, E], weights [B, L, S] or None)``."""
        unbatched = query.dim() == 2
        if unbatched:
            query, key, value = query.unsqueeze(1), key.unsqueeze(1), value.unsqueeze(1)
            key_padding_mask = key_padding_mask.unsqueeze(0) if key_padding_mask is not None else None
        elif self.batch_first:
            query, key, value = query.transpose(0, 1), key.transpose(0, 1), value.transpose(0, 1)
        tgt_len, bsz, embed = query.shape
        src_len = key.shape[0]
        heads, head_dim = self.num_heads, self.head_dim
        w_q, w_k, w_v = self.w_quant(self.in_proj_weight).chunk(3)
        b_q, b_k, b_v = self.in_proj_bias.chunk(3) if self.in_proj_bias is not None else (None, None, None)
        q = quant_linear(self.a_quant, query, w_q, b_q, self.recompute_act_quant)
        k = quant_linear(self.k_quant, key, w_k, b_k, self.recompute_act_quant)
        v = quant_linear(self.v_quant, value, w_v, b_v, self.recompute_act_quant)
        q = q.reshape(tgt_len, bsz * heads, head_dim).transpose(0, 1)  # [B*h, L, d]
        k = k.reshape(src_len, bsz * heads, head_dim).transpose(0, 1)  # [B*h, S, d]
        v = v.reshape(src_len, bsz * heads, head_dim).transpose(0, 1)
        if is_causal and attn_mask is None:
            attn_mask = torch.ones(tgt_len, src_len, dtype=torch.bool, device=query.device).triu(1)
        mask = self._additive_mask(attn_mask, key_padding_mask, bsz, tgt_len, src_len, q.dtype)
        scores = torch.bmm(q * (1.0 / math.sqrt(head_dim)), k.transpose(1, 2))  # [B*h, L, S]
        if mask is not None:
            scores = scores + mask
        attn = torch.softmax(scores, dim=-1)
        if self.training and self.dropout > 0:
            attn = F.dropout(attn, p=self.dropout)
        out = torch.bmm(attn, v).transpose(0, 1).reshape(tgt_len, bsz, embed)
        out = self.out_proj(out)
        if unbatched:
            out = out.squeeze(1)
        elif self.batch_first:
            out = out.transpose(0, 1)
        if not need_weights:
            return out, None
        weights = attn.reshape(bsz, heads, tgt_len, src_len)
        weights = weights.mean(dim=1) if average_attn_weights else weights
        return out, (weights.squeeze(0) if unbatched else weights)

    def _additive_mask(self, attn_mask: Optional[Tensor], key_padding_mask: Optional[Tensor], bsz: int,
                       tgt_len: int, src_len: int, dtype: torch.dtype) -> Optional[Tensor]:
        """Bool (True = masked) or float masks as one additive mask ``[B*h or 1, L, S]``."""
        def additive(m: Tensor) -> Tensor:
            if m.dtype == torch.bool:
                return torch.zeros(m.shape, dtype=dtype, device=m.device).masked_fill(m, float('-inf'))
            return m.to(dtype)

        mask = None
        if attn_mask is not None:
            mask = additive(attn_mask)
            if mask.dim() == 2:
                mask = mask.unsqueeze(0)
            elif mask.shape[0] != bsz * self.num_heads:
                raise ValueError(f'attn_mask of shape {tuple(attn_mask.shape)} must be [L, S] or '
                                 f'[B*num_heads, L, S] = [{bsz * self.num_heads}, {tgt_len}, {src_len}]')
        if key_padding_mask is not None:
            kpm = additive(key_padding_mask).reshape(bsz, 1, 1, src_len).expand(bsz, self.num_heads, 1, src_len)
            kpm = kpm.reshape(bsz * self.num_heads, 1, src_len)
            mask = kpm if mask is None else mask + kpm
        return mask
