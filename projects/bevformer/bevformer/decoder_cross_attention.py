"""BEVFormer's ``CustomMSDeformableAttention``: object queries attend into the BEV with deformable attention
around their (refined) reference points."""
import warnings
from typing import Optional

import torch
from mmdet3d.registry import MODELS
from mmengine.model import BaseModule
from torch import Tensor, nn

from .ms_deform_attn import init_sampling_, multi_scale_deform_attn, xavier_linear_


@MODELS.register_module()
class CustomMSDeformableAttention(BaseModule):
    """Deformable DETR attention with output projection, dropout and residual.

    Args:
        embed_dims: channels C. num_heads: heads. num_levels: value levels (1: the BEV). num_points: points per
            head and level. dropout: on the output before the residual.
    """

    def __init__(self, embed_dims: int = 256, num_heads: int = 8, num_levels: int = 1, num_points: int = 4,
                 im2col_step: int = 64, dropout: float = 0.1, batch_first: bool = True,
                 init_cfg: Optional[dict] = None) -> None:
        super().__init__(init_cfg)
        if embed_dims % num_heads != 0:
            raise ValueError(f'CustomMSDeformableAttention: embed_dims {embed_dims} must be divisible by '
                             f'num_heads {num_heads}')
        head_dim = embed_dims // num_heads
        if head_dim & (head_dim - 1):
            warnings.warn(f'CustomMSDeformableAttention: head dim {head_dim} is not a power of 2')
        self.embed_dims, self.num_heads = embed_dims, num_heads
        self.num_levels, self.num_points = num_levels, num_points
        self.im2col_step = im2col_step
        self.sampling_offsets = nn.Linear(embed_dims, num_heads * num_levels * num_points * 2)
        self.attention_weights = nn.Linear(embed_dims, num_heads * num_levels * num_points)
        self.value_proj = nn.Linear(embed_dims, embed_dims)
        self.output_proj = nn.Linear(embed_dims, embed_dims)
        self.dropout = nn.Dropout(dropout)
        self.init_weights()

    def init_weights(self) -> None:
        """Deformable DETR initialisation (see :func:`init_sampling_`)."""
        init_sampling_(self.sampling_offsets, self.attention_weights, self.num_heads, self.num_levels,
                       self.num_points)
        xavier_linear_(self.value_proj)
        xavier_linear_(self.output_proj)
        self._is_init = True

    def forward(self, query: Tensor, value: Tensor, reference_points: Tensor, spatial_shapes: Tensor,
                level_start_index: Tensor, query_pos: Optional[Tensor] = None) -> Tensor:
        """
        Args:
            query: ``[B, Q, C]`` (also the residual); query_pos: ``[B, Q, C]``.
            value: ``[B, N_v, C]`` the BEV features. reference_points: ``[B, Q, L, 2]`` normalised (x, y).
            spatial_shapes: ``[L, 2]``; level_start_index: ``[L]``.
        Returns:
            ``[B, Q, C]``.
        """
        b, n_q, c = query.shape
        n_v = value.shape[1]
        h, lv, p = self.num_heads, self.num_levels, self.num_points
        identity = query
        q_in = query if query_pos is None else query + query_pos
        v = self.value_proj(value).view(b, n_v, h, c // h)
        offsets = self.sampling_offsets(q_in).view(b, n_q, h, lv, p, 2)
        weights = self.attention_weights(q_in).view(b, n_q, h, lv * p).softmax(-1).view(b, n_q, h, lv, p)
        normalizer = torch.stack([spatial_shapes[..., 1], spatial_shapes[..., 0]], -1).to(offsets.dtype)
        locations = reference_points[:, :, None, :, None, :] + offsets / normalizer[None, None, None, :, None, :]
        out = multi_scale_deform_attn(v, spatial_shapes, level_start_index, locations, weights, self.im2col_step)
        return self.dropout(self.output_proj(out)) + identity
