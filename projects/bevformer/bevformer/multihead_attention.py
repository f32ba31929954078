"""Decoder self-attention among object queries with explicit ``nn.Linear`` projections.

Same function as mmcv's ``MultiheadAttention`` (torch ``nn.MultiheadAttention`` + residual) used by BEVFormer's
decoder, but q/k/v are separate ``nn.Linear`` layers (so a quantizer can swap them; official checkpoints'
``attn.in_proj_weight`` is split into them by ``tools/convert_bevformer_ckpt.py``).
"""
from typing import Optional

import torch.nn.functional as F
from mmdet3d.registry import MODELS
from mmengine.model import BaseModule
from torch import Tensor, nn


@MODELS.register_module()
class QueryMultiheadAttention(BaseModule):
    """``identity + drop(out_proj(softmax(QK^T / sqrt(d)) V))`` with ``Q = K = q_proj/k_proj(x + pos)``,
    ``V = v_proj(x)``.

    Args:
        embed_dims: channels C. num_heads: heads. dropout: on the attention weights and on the output
            (mmcv's ``dropout=`` shorthand used by BEVFormer configs sets both).
    """

    def __init__(self, embed_dims: int = 256, num_heads: int = 8, dropout: float = 0.1,
                 init_cfg: Optional[dict] = None) -> None:
        super().__init__(init_cfg)
        if embed_dims % num_heads != 0:
            raise ValueError(f'QueryMultiheadAttention: embed_dims {embed_dims} must be divisible by num_heads '
                             f'{num_heads}')
        self.embed_dims, self.num_heads, self.attn_drop = embed_dims, num_heads, dropout
        self.q_proj = nn.Linear(embed_dims, embed_dims)
        self.k_proj = nn.Linear(embed_dims, embed_dims)
        self.v_proj = nn.Linear(embed_dims, embed_dims)
        self.out_proj = nn.Linear(embed_dims, embed_dims)
        self.proj_drop = nn.Dropout(dropout)
        self.init_weights()

    def init_weights(self) -> None:
        """torch ``nn.MultiheadAttention`` initialisation: xavier projections, zero biases."""
        for layer in (self.q_proj, self.k_proj, self.v_proj):
            nn.init.xavier_uniform_(layer.weight)
            nn.init.constant_(layer.bias, 0.)
        nn.init.constant_(self.out_proj.bias, 0.)
        self._is_init = True

    def forward(self, query: Tensor, query_pos: Optional[Tensor] = None) -> Tensor:
        """``query`` / ``query_pos`` ``[B, Q, C]`` -> ``[B, Q, C]``."""
        b, n, c = query.shape
        h = self.num_heads
        qk = query if query_pos is None else query + query_pos
        q = self.q_proj(qk).view(b, n, h, c // h).transpose(1, 2)
        k = self.k_proj(qk).view(b, n, h, c // h).transpose(1, 2)
        v = self.v_proj(query).view(b, n, h, c // h).transpose(1, 2)
        out = F.scaled_dot_product_attention(q, k, v, dropout_p=self.attn_drop if self.training else 0.0)
        out = out.transpose(1, 2).reshape(b, n, c)
        return query + self.proj_drop(self.out_proj(out))
