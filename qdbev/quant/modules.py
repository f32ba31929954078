"""Fake-quantized layers: subclasses of ``nn.Conv2d`` / ``nn.Linear`` / ``nn.MultiheadAttention``.

Each carries a weight quantizer ``w_quant`` and an input-activation quantizer ``a_quant`` (attention also
``k_quant`` / ``v_quant`` for its key and value inputs). Being subclasses, ``isinstance`` checks in mmcv/mmdet
keep working and the state dict keeps ``weight`` / ``bias`` (``in_proj_weight`` ...) under the same names; the
quantizers add ``w_quant.*`` / ``a_quant.*`` keys. ``from_float`` shares the float module's parameters (no copy).
"""
import math
from typing import Iterator, List, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .fake_quantizer import FakeQuantizer

__all__ = ['QuantModule', 'QuantConv2d', 'QuantLinear', 'QuantMultiheadAttention']


class QuantModule:
    """Mixin of the quantized layers: ``stage`` / ``qname`` tags and access to the quantizers."""
    stage: Optional[str] = None  # 'backbone' / 'neck' / 'encoder' / 'decoder' / None, set by quantize_model
    qname: str = ''  # module name at quantize_model time
    act_quantizer_names: Tuple[str, ...] = ('a_quant',)

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
        return self._conv_forward(self.a_quant(x), self.w_quant(self.weight), self.bias)


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
        return F.linear(self.a_quant(x), self.w_quant(self.weight), self.bias)


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
        q = F.linear(self.a_quant(query), w_q, b_q)
        k = F.linear(self.k_quant(key), w_k, b_k)
        v = F.linear(self.v_quant(value), w_v, b_v)
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
