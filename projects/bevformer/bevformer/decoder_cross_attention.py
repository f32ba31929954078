"""BEVFormer's ``CustomMSDeformableAttention``: object queries attend into the BEV with deformable attention
around their (refined) reference points."""
from typing import Optional

import torch
from mmdet3d.registry import MODELS
from torch import Tensor

from .ms_deform_attn import DeformableAttentionBase, multi_scale_deform_attn


@MODELS.register_module()
class CustomMSDeformableAttention(DeformableAttentionBase):
    """Deformable DETR attention with output projection, dropout and residual.

    Args:
        embed_dims: channels C. num_heads: heads. num_levels: value levels (1: the BEV). num_points: points per
            head and level. dropout: on the output before the residual.
    """

    def __init__(self, embed_dims: int = 256, num_heads: int = 8, num_levels: int = 1, num_points: int = 4,
                 im2col_step: int = 64, dropout: float = 0.1, batch_first: bool = True,
                 init_cfg: Optional[dict] = None) -> None:
        super().__init__('CustomMSDeformableAttention', embed_dims, num_heads, num_levels, num_points, im2col_step,
                         output_dropout=dropout, init_cfg=init_cfg)

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
