"""BEVFormer's detection decoder with iterative box refinement.

Each layer is ``self-attention -> norm -> deformable cross-attention into the BEV -> norm -> FFN -> norm``.
After layer ``l`` the regression branch ``l`` refines the reference points in logit space (x, y from code slots
0, 1 and z from slot 4), detached before the next layer (Deformable DETR's box refinement).
"""
from typing import Optional, Tuple

import torch
from mmdet.models.layers.transformer import inverse_sigmoid
from mmdet3d.registry import MODELS
from mmengine.model import BaseModule, ModuleList
from torch import Tensor, nn

from .post_norm_layer import PostNormLayer


def refine_reference_points(reference_points: Tensor, reg_out: Tensor) -> Tensor:
    """Box refinement: ``sigmoid(reg_out[..., (0, 1, 4)] + logit(reference_points))``, detached.

    Args:
        reference_points: ``[B, Q, 3]`` normalised (x, y, z) in (0, 1). reg_out: ``[B, Q, 10]`` raw codes.
    Returns:
        ``[B, Q, 3]`` new reference points (no gradient).
    """
    delta = torch.cat((reg_out[..., 0:2], reg_out[..., 4:5]), dim=-1)
    return (delta + inverse_sigmoid(reference_points)).sigmoid().detach()


def group_self_attention(self_attn: nn.Module, query: Tensor, query_pos: Tensor, num_groups: int) -> Tensor:
    """Self-attention within each of ``num_groups`` contiguous query groups (Group DETR's group-wise attention,
    Chen et al. 2023, Sec. 3): ``[B, G * Q, C]`` is attended as ``[B * G, Q, C]``, so no group sees another and
    each group behaves as the single group used at inference.
    """
    if num_groups == 1:
        return self_attn(query, query_pos)
    b, n, c = query.shape
    if n % num_groups:
        raise ValueError(f'group_self_attention: {n} queries do not split into {num_groups} groups')
    q = n // num_groups
    out = self_attn(query.reshape(b * num_groups, q, c), query_pos.reshape(b * num_groups, q, c))
    return out.reshape(b, n, c)


@MODELS.register_module()
class DetectionTransformerDecoderLayer(PostNormLayer):
    """One decoder layer (post-norm).

    Args:
        self_attn_cfg: :class:`QueryMultiheadAttention` config. cross_attn_cfg: :class:`CustomMSDeformableAttention`
            config. ffn_cfg: mmcv ``FFN`` config.
    """

    def forward(self, query: Tensor, query_pos: Tensor, value: Tensor, reference_points: Tensor,
                spatial_shapes: Tensor, level_start_index: Tensor, num_groups: int = 1) -> Tensor:
        """``query``/``query_pos`` ``[B, Q, C]``, ``value`` ``[B, HW, C]``, ``reference_points`` ``[B, Q, L, 2]``
        -> ``[B, Q, C]``. ``num_groups`` > 1: the queries are that many contiguous groups that attend only within
        their own group (:func:`group_self_attention`)."""
        query = self.norms[0](group_self_attention(self.self_attn, query, query_pos, num_groups))
        query = self.norms[1](self.cross_attn(query, value, reference_points, spatial_shapes, level_start_index,
                                              query_pos=query_pos))
        return self.norms[2](self.ffn(query))


@MODELS.register_module()
class DetectionTransformerDecoder(BaseModule):
    """Stack of decoder layers returning every layer's output and reference points.

    Args:
        num_layers: layers (6). layer_cfg: config of one layer.
    """

    def __init__(self, num_layers: int, layer_cfg: dict, init_cfg: Optional[dict] = None) -> None:
        super().__init__(init_cfg)
        self.layers = ModuleList([MODELS.build(layer_cfg) for _ in range(num_layers)])
        self.num_layers = num_layers

    def forward(self, query: Tensor, query_pos: Tensor, value: Tensor, reference_points: Tensor,
                spatial_shapes: Tensor, level_start_index: Tensor,
                reg_branches: Optional[nn.ModuleList] = None, num_groups: int = 1
                ) -> Tuple[Tensor, Tensor, Optional[Tensor]]:
        """
        Args:
            query, query_pos: ``[B, Q, C]``. value: ``[B, HW, C]`` BEV features.
            reference_points: ``[B, Q, 3]`` initial normalised reference points.
            reg_branches: per-layer regression branches for box refinement (None: no refinement).
            num_groups: independent query groups (training-time Group DETR; 1 at inference).
        Returns:
            ``(states [L, B, Q, C], references [L, B, Q, 3], reg_outs [L, B, Q, 10] or None)``: references[l] are
            the points AFTER layer l's refinement (the head uses ``references[l - 1]`` for layer l); ``reg_outs[l]``
            is ``reg_branches[l](states[l])``, the refinement's input and, with its gradient, the head's box output
            of layer l (None without ``reg_branches``). BEVFormer's head runs each branch a second time on the same
            state for its boxes; here it reuses these.
        """
        states, refs, reg_outs = [], [], []
        for lid, layer in enumerate(self.layers):
            query = layer(query, query_pos, value, reference_points[..., :2].unsqueeze(2), spatial_shapes,
                          level_start_index, num_groups=num_groups)
            if reg_branches is not None:
                reg_outs.append(reg_branches[lid](query))
                reference_points = refine_reference_points(reference_points, reg_outs[-1])
            states.append(query)
            refs.append(reference_points)
        return torch.stack(states), torch.stack(refs), torch.stack(reg_outs) if reg_outs else None
