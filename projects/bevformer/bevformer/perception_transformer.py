"""BEVFormer's ``PerceptionTransformer``: camera features -> BEV features (encoder) -> object queries (decoder)."""
from typing import List, Optional, Sequence, Tuple

import torch
from mmdet3d.registry import MODELS
from mmengine.model import BaseModule
from torch import Tensor, nn

from qdbev.device_constants import device_constant
from .ego_motion import EgoMotionAlign
from .ms_deform_attn import xavier_linear_


def level_tensors(shapes: Sequence[Tuple[int, int]], device: torch.device) -> Tuple[Tensor, Tensor]:
    """``(spatial_shapes [L, 2], level_start_index [L])`` (long) of feature maps of ``shapes`` ``(h, w)`` flattened
    one after the other, as the deformable attentions take them; cached per device
    (:func:`qdbev.device_constants.device_constant`: no host-to-device copy per call)."""
    starts = [0]
    for h, w in shapes[:-1]:
        starts.append(starts[-1] + h * w)
    return device_constant(shapes, torch.long, device), device_constant(starts, torch.long, device)


@MODELS.register_module()
class PerceptionTransformer(BaseModule):
    """Owns the learned camera/level embeddings, the can_bus MLP, the encoder and the decoder.

    Args:
        encoder: :class:`BEVFormerEncoder` config. decoder: :class:`DetectionTransformerDecoder` config.
        embed_dims: C. num_feature_levels: FPN levels used (level embeddings). num_cams: cameras.
        rotate_prev_bev / use_shift / use_can_bus / can_bus_norm / use_cams_embeds: BEVFormer switches (all True).
        rotate_center: ``(x, y)`` pixel centre of the previous-BEV rotation; None = grid centre. The official
            configs leave BEVFormer's default ``[100, 100]`` (the centre of base's 200x200 grid) for every size.
    """

    def __init__(self, encoder: dict, decoder: dict, embed_dims: int = 256, num_feature_levels: int = 4,
                 num_cams: int = 6, rotate_prev_bev: bool = True, use_shift: bool = True, use_can_bus: bool = True,
                 can_bus_norm: bool = True, use_cams_embeds: bool = True,
                 rotate_center: Optional[Sequence[float]] = (100, 100), init_cfg: Optional[dict] = None) -> None:
        super().__init__(init_cfg)
        self.encoder = MODELS.build(encoder)
        self.decoder = MODELS.build(decoder)
        self.embed_dims, self.num_feature_levels, self.num_cams = embed_dims, num_feature_levels, num_cams
        self.use_can_bus, self.use_cams_embeds = use_can_bus, use_cams_embeds
        self.ego_motion = EgoMotionAlign(rotate_prev_bev, use_shift, rotate_center)  # a part of its own to compile
        self.level_embeds = nn.Parameter(torch.empty(num_feature_levels, embed_dims))
        self.cams_embeds = nn.Parameter(torch.empty(num_cams, embed_dims))
        self.reference_points = nn.Linear(embed_dims, 3)
        self.can_bus_mlp = nn.Sequential(
            nn.Linear(18, embed_dims // 2), nn.ReLU(inplace=True),
            nn.Linear(embed_dims // 2, embed_dims), nn.ReLU(inplace=True))
        if can_bus_norm:
            self.can_bus_mlp.add_module('norm', nn.LayerNorm(embed_dims))
        self.init_weights()

    def init_weights(self) -> None:
        """BEVFormer: xavier for every matrix, then the attentions' own initialisation, normal embeddings."""
        for p in self.parameters():
            if p.dim() > 1:
                nn.init.xavier_uniform_(p)
        for m in self.modules():
            if m is not self and hasattr(m, 'sampling_offsets') and hasattr(m, 'init_weights'):
                m.init_weights()
        nn.init.normal_(self.level_embeds)
        nn.init.normal_(self.cams_embeds)
        xavier_linear_(self.reference_points)
        for m in self.can_bus_mlp:
            if isinstance(m, nn.Linear):
                xavier_linear_(m)
        self._is_init = True

    def flatten_features(self, mlvl_feats: List[Tensor]) -> Tuple[Tensor, Tensor, Tensor]:
        """``[B, N, C, h_l, w_l]`` per level -> ``(value [B, N, sum h_l w_l, C]`` with camera and level
        embeddings added, ``spatial_shapes [L, 2]``, ``level_start_index [L])``."""
        if len(mlvl_feats) > self.num_feature_levels:
            raise ValueError(f'PerceptionTransformer: {len(mlvl_feats)} feature levels but num_feature_levels='
                             f'{self.num_feature_levels}; set it to the neck num_outs')
        flat, shapes = [], []
        for lvl, feat in enumerate(mlvl_feats):
            b, n, c, h, w = feat.shape
            if n > self.num_cams:
                raise ValueError(f'PerceptionTransformer: {n} cameras but num_cams={self.num_cams}')
            f = feat.flatten(3).transpose(2, 3)  # [B, N, hw, C]
            if self.use_cams_embeds:
                f = f + self.cams_embeds[None, :n, None, :].to(f.dtype)
            f = f + self.level_embeds[None, None, lvl:lvl + 1, :].to(f.dtype)
            flat.append(f)
            shapes.append((h, w))
        device = mlvl_feats[0].device
        spatial_shapes, level_start_index = level_tensors(shapes, device)
        return torch.cat(flat, dim=2), spatial_shapes, level_start_index

    def get_bev_features(self, mlvl_feats: List[Tensor], bev_queries: Tensor, bev_h: int, bev_w: int,
                         bev_pos: Tensor, can_bus: Tensor, lidar2img: Tensor, pad_shape: Tuple[int, int],
                         real_h: float, real_w: float, prev_bev: Optional[Tensor] = None,
                         prev_valid: Optional[Tensor] = None) -> Tensor:
        """BEV features of one frame.

        Args:
            mlvl_feats: per level ``[B, N, C, h, w]``. bev_queries: ``[HW, C]`` BEV embedding.
            bev_pos: ``[B, C, bev_h, bev_w]`` learned positional encoding. can_bus: ``[B, 18]`` deltas.
            lidar2img: ``[B, N, 4, 4]`` for the padded input ``pad_shape`` (H, W). real_h/real_w: BEV extent (m).
            prev_bev: ``[B, HW, C]`` previous BEV (not yet aligned) or None; prev_valid: ``[B]`` bool.
        Returns:
            ``[B, HW, C]``.
        """
        b = mlvl_feats[0].shape[0]
        dtype = mlvl_feats[0].dtype
        can_bus = can_bus.to(device=bev_queries.device)
        shift, prev_bev = self.ego_motion(can_bus, bev_h, bev_w, real_h, real_w, dtype, prev_bev)
        query = bev_queries.to(dtype)[None].expand(b, -1, -1)
        if self.use_can_bus:
            query = query + self.can_bus_mlp(can_bus.to(dtype))[:, None, :]
        value, spatial_shapes, level_start_index = self.flatten_features(mlvl_feats)
        pos = bev_pos.flatten(2).transpose(1, 2).to(dtype)
        return self.encoder(query, value, bev_h, bev_w, pos, spatial_shapes, level_start_index, lidar2img,
                            pad_shape, prev_bev=prev_bev, prev_valid=prev_valid, shift=shift)

    def decode(self, bev_embed: Tensor, object_query_embed: Tensor, bev_h: int, bev_w: int,
               reg_branches: Optional[nn.ModuleList] = None, num_groups: int = 1
               ) -> Tuple[Tensor, Tensor, Tensor, Optional[Tensor]]:
        """Decoder on the BEV.

        Args:
            bev_embed: ``[B, HW, C]``. object_query_embed: ``[Q, 2C]`` (positional half first, BEVFormer).
            num_groups: the queries are that many contiguous groups attending only within their own group.
        Returns:
            ``(states [L, B, Q, C], init_reference [B, Q, 3], references [L, B, Q, 3], reg_outs [L, B, Q, 10] or
            None)``: ``reg_outs`` the refinement's branch outputs (:class:`DetectionTransformerDecoder`).
        """
        b = bev_embed.shape[0]
        query_pos, query = torch.split(object_query_embed.to(bev_embed.dtype), self.embed_dims, dim=1)
        query_pos = query_pos[None].expand(b, -1, -1)
        query = query[None].expand(b, -1, -1)
        init_reference = self.reference_points(query_pos).sigmoid()
        shapes, start = level_tensors([(bev_h, bev_w)], bev_embed.device)
        states, references, reg_outs = self.decoder(query, query_pos, bev_embed, init_reference, shapes, start,
                                                    reg_branches=reg_branches, num_groups=num_groups)
        return states, init_reference, references, reg_outs
