"""BEVFormer's ``MSDeformableAttention3D``: deformable attention of BEV queries into ONE camera's multi-level
features, around the projections of the query's ``D`` pillar points."""
import warnings
from typing import Optional

import torch
from mmdet3d.registry import MODELS
from mmengine.model import BaseModule
from torch import Tensor, nn

from .ms_deform_attn import check_value_length, init_sampling_, multi_scale_deform_attn, xavier_linear_


@MODELS.register_module()
class MSDeformableAttention3D(BaseModule):
    """``num_points`` samples per head and level, split evenly over the ``D`` projected pillar points
    (point index ``k * D + d`` belongs to pillar point ``d``). No output projection and no residual: the
    surrounding :class:`SpatialCrossAttention` owns them.

    Args:
        embed_dims: channels C. num_heads: heads. num_levels: feature levels. num_points: samples per
            head and level in total (BEVFormer: 8 = 2 per pillar point for D = 4).
    """

    def __init__(self, embed_dims: int = 256, num_heads: int = 8, num_levels: int = 4, num_points: int = 8,
                 im2col_step: int = 64, batch_first: bool = True, init_cfg: Optional[dict] = None) -> None:
        super().__init__(init_cfg)
        if embed_dims % num_heads != 0:
            raise ValueError(f'MSDeformableAttention3D: embed_dims {embed_dims} must be divisible by num_heads '
                             f'{num_heads}')
        head_dim = embed_dims // num_heads
        if head_dim & (head_dim - 1):
            warnings.warn(f'MSDeformableAttention3D: head dim {head_dim} is not a power of 2 (slower CUDA kernel)')
        self.embed_dims, self.num_heads = embed_dims, num_heads
        self.num_levels, self.num_points = num_levels, num_points
        self.im2col_step = im2col_step
        self.sampling_offsets = nn.Linear(embed_dims, num_heads * num_levels * num_points * 2)
        self.attention_weights = nn.Linear(embed_dims, num_heads * num_levels * num_points)
        self.value_proj = nn.Linear(embed_dims, embed_dims)
        self.init_weights()

    def init_weights(self) -> None:
        """Deformable DETR initialisation (see :func:`init_sampling_`)."""
        init_sampling_(self.sampling_offsets, self.attention_weights, self.num_heads, self.num_levels,
                       self.num_points)
        xavier_linear_(self.value_proj)
        self._is_init = True

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
