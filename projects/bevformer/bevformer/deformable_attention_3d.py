"""BEVFormer's ``MSDeformableAttention3D``: deformable attention of BEV queries into ONE camera's multi-level
features, around the projections of the query's ``D`` pillar points."""
from typing import Optional

import torch
from mmdet3d.registry import MODELS
from torch import Tensor

from .ms_deform_attn import DeformableAttentionBase, check_value_length, multi_scale_deform_attn


@MODELS.register_module()
class MSDeformableAttention3D(DeformableAttentionBase):
    """``num_points`` samples per head and level, split evenly over the ``D`` projected pillar points
    (point index ``k * D + d`` belongs to pillar point ``d``). No output projection and no residual: the
    surrounding :class:`SpatialCrossAttention` owns them.

    Args:
        embed_dims: channels C. num_heads: heads. num_levels: feature levels. num_points: samples per
            head and level in total (BEVFormer: 8 = 2 per pillar point for D = 4).
    """

    def __init__(self, embed_dims: int = 256, num_heads: int = 8, num_levels: int = 4, num_points: int = 8,
                 im2col_step: int = 64, batch_first: bool = True, init_cfg: Optional[dict] = None) -> None:
        super().__init__('MSDeformableAttention3D', embed_dims, num_heads, num_levels, num_points, im2col_step,
                         init_cfg=init_cfg)

    def forward(self, query: Tensor, value: Tensor, reference_points: Tensor, spatial_shapes: Tensor,
                level_start_index: Tensor) -> Tensor:
        """
        Args:
            query: ``[B', Q, C]`` (rebatched per camera). value: ``[B', N_v, C]`` that camera's features.
            reference_points: ``[B', Q, D, 2]`` normalised image positions of the D pillar points.
            spatial_shapes: ``[L, 2]`` (h, w); level_start_index: ``[L]``.
        Returns:
            ``[B', Q, C]`` sampled features (before the output projection).
        """
        b, n_q, c = query.shape
        n_v = value.shape[1]
        h, lv, p = self.num_heads, self.num_levels, self.num_points
        d = reference_points.shape[2]
        if p % d != 0:
            raise ValueError(f'MSDeformableAttention3D: num_points {p} must be a multiple of num_points_in_pillar {d}')
        check_value_length(spatial_shapes, n_v, 'MSDeformableAttention3D')
        v = self.value_proj(value).view(b, n_v, h, c // h)
        offsets = self.sampling_offsets(query).view(b, n_q, h, lv, p, 2)
        weights = self.attention_weights(query).view(b, n_q, h, lv * p).softmax(-1).view(b, n_q, h, lv, p)
        normalizer = torch.stack([spatial_shapes[..., 1], spatial_shapes[..., 0]], -1).to(offsets.dtype)
        offsets = (offsets / normalizer[None, None, None, :, None, :]).view(b, n_q, h, lv, p // d, d, 2)
        locations = reference_points[:, :, None, None, None, :, :] + offsets
        locations = locations.view(b, n_q, h, lv, p, 2)
        return multi_scale_deform_attn(v, spatial_shapes, level_start_index, locations, weights, self.im2col_step)
