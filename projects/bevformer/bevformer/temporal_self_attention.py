"""BEVFormer's temporal self-attention (TSA): BEV queries attend to the (ego-aligned) previous BEV and to
themselves with deformable attention on the BEV plane."""
from typing import Optional

import torch
from mmdet3d.registry import MODELS
from torch import Tensor

from .ms_deform_attn import DeformableAttentionBase, check_value_length, multi_scale_deform_attn


@MODELS.register_module()
class TemporalSelfAttention(DeformableAttentionBase):
    """Deformable self-attention over a queue of two BEVs (previous, current), outputs averaged.

    Offsets and weights are predicted from ``[prev_value, query + pos]`` (``2 * embed_dims`` inputs), per head,
    per BEV of the queue, per level and point; the samples of the two BEVs are averaged, projected and added to
    the input query (BEVFormer's ``TemporalSelfAttention`` with batch handling made explicit: the official code
    is only correct for batch size 1).

    Args:
        embed_dims: channels C. num_heads: heads. num_levels: BEV levels (1). num_points: points per head/level.
        num_bev_queue: BEVs attended (2: previous and current). dropout: on the output before the residual.
    """

    def __init__(self, embed_dims: int = 256, num_heads: int = 8, num_levels: int = 1, num_points: int = 4,
                 num_bev_queue: int = 2, im2col_step: int = 64, dropout: float = 0.1,
                 batch_first: bool = True, init_cfg: Optional[dict] = None) -> None:
        if num_bev_queue != 2:
            raise ValueError(f'TemporalSelfAttention: num_bev_queue must be 2 (previous, current), got {num_bev_queue}')
        super().__init__('TemporalSelfAttention', embed_dims, num_heads, num_levels, num_points, im2col_step,
                         queue=num_bev_queue, output_dropout=dropout, init_cfg=init_cfg)
        self.num_bev_queue = num_bev_queue

    def forward(self, query: Tensor, value: Tensor, reference_points: Tensor, spatial_shapes: Tensor,
                level_start_index: Tensor, query_pos: Optional[Tensor] = None) -> Tensor:
        """
        Args:
            query: ``[B, HW, C]`` BEV queries (also the residual).
            value: ``[B, 2, HW, C]`` the BEV queue (slot 0 previous BEV, slot 1 current); without a previous BEV
                both slots hold ``query`` (BEVFormer).
            reference_points: ``[B, 2, HW, L, 2]`` normalised (x, y) per queue slot (slot 0 shifted by ego motion).
            spatial_shapes: ``[L, 2]`` (bev_h, bev_w); level_start_index: ``[L]``.
            query_pos: ``[B, HW, C]`` learned BEV positional encoding, added to the query for offsets/weights.
        Returns:
            ``[B, HW, C]``.
        """
        b, n_q, c = query.shape
        q, h, lv, p = self.num_bev_queue, self.num_heads, self.num_levels, self.num_points
        n_v = value.shape[2]
        check_value_length(spatial_shapes, n_v, 'TemporalSelfAttention')
        identity = query
        q_in = query if query_pos is None else query + query_pos
        q_in = torch.cat([value[:, 0], q_in], dim=-1)  # [B, HW, 2C]
        v = self.value_proj(value).reshape(b * q, n_v, h, c // h)
        offsets = self.sampling_offsets(q_in).view(b, n_q, h, q, lv, p, 2)
        offsets = offsets.permute(0, 3, 1, 2, 4, 5, 6).reshape(b * q, n_q, h, lv, p, 2)
        weights = self.attention_weights(q_in).view(b, n_q, h, q, lv * p).softmax(-1)
        weights = weights.view(b, n_q, h, q, lv, p).permute(0, 3, 1, 2, 4, 5).reshape(b * q, n_q, h, lv, p)
        normalizer = torch.stack([spatial_shapes[..., 1], spatial_shapes[..., 0]], -1).to(offsets.dtype)
        ref = reference_points.reshape(b * q, n_q, lv, 2)
        locations = ref[:, :, None, :, None, :] + offsets / normalizer[None, None, None, :, None, :]
        out = multi_scale_deform_attn(v, spatial_shapes, level_start_index, locations, weights, self.im2col_step)
        out = out.view(b, q, n_q, c).mean(dim=1)  # fuse the previous and current BEV samples
        return self.dropout(self.output_proj(out)) + identity
