"""BEVFormer's encoder: BEV queries refined by temporal self-attention and spatial cross-attention.

Each layer is ``TSA -> norm -> SCA -> norm -> FFN -> norm`` (post-norm). The camera geometry (pillar points,
their projections and hits) is computed once per frame with :mod:`qdbev.geometry`, the same functions
QD-BEV's view-guided distillation uses for its camera masks.
"""
from typing import Optional, Sequence, Tuple, Union

import torch
from mmdet3d.registry import MODELS
from mmengine.model import BaseModule, ModuleList
from torch import Tensor

from qdbev.device_constants import device_constant
from qdbev.geometry import pillar_points, project_points
from .post_norm_layer import PostNormLayer
from .spatial_cross_attention import CameraHits


def bev_grid_2d(bev_h: int, bev_w: int, device=None, dtype=torch.float32) -> Tensor:
    """Normalised BEV cell centres ``[bev_h * bev_w, 2]`` (x, y), flat index ``i * bev_w + j`` for row i
    (along y) and column j (along x): ``((j + 0.5) / bev_w, (i + 0.5) / bev_h)``."""
    ys = (torch.arange(bev_h, device=device, dtype=dtype) + 0.5) / bev_h
    xs = (torch.arange(bev_w, device=device, dtype=dtype) + 0.5) / bev_w
    y, x = torch.meshgrid(ys, xs, indexing='ij')
    return torch.stack((x.reshape(-1), y.reshape(-1)), dim=-1)


def temporal_queue(query: Tensor, init_query: Tensor, prev_bev: Optional[Tensor],
                   prev_valid: Optional[Tensor]) -> Tensor:
    """The two BEVs temporal self-attention attends to, ``[B, 2, HW, C]``.

    With a previous BEV (BEVFormer): ``(prev_bev, init_query)`` where ``init_query`` is the encoder's input
    query; without one: ``(query, query)`` with the layer's current query. ``prev_valid`` ``[B]`` bool chooses
    per sample (a batch may mix scene starts and continuing frames).
    """
    if prev_bev is None:
        return torch.stack((query, query), dim=1)
    keep = prev_valid.view(-1, 1, 1).to(torch.bool)
    return torch.stack((torch.where(keep, prev_bev, query), torch.where(keep, init_query, query)), dim=1)


@MODELS.register_module()
class BEVFormerEncoderLayer(PostNormLayer):
    """One encoder layer: temporal self-attention, norm, spatial cross-attention, norm, FFN, norm.

    Args:
        self_attn_cfg: :class:`TemporalSelfAttention` config. cross_attn_cfg: :class:`SpatialCrossAttention` config.
        ffn_cfg: mmcv ``FFN`` config (embed_dims, feedforward_channels, ffn_drop).
        norm_eps: LayerNorm eps.
    """

    def forward(self, query: Tensor, bev_pos: Tensor, init_query: Tensor, prev_bev: Optional[Tensor],
                prev_valid: Optional[Tensor], ref_2d: Tensor, value: Tensor, reference_points_cam: Tensor,
                bev_mask: Union[Tensor, CameraHits], spatial_shapes: Tensor, level_start_index: Tensor,
                bev_shapes: Tensor) -> Tensor:
        """
        Args:
            query, bev_pos, init_query: ``[B, HW, C]``. prev_bev: ``[B, HW, C]`` aligned previous BEV or None;
            prev_valid: ``[B]`` bool. ref_2d: ``[B, 2, HW, 1, 2]`` TSA reference points;
            bev_shapes: ``[[bev_h, bev_w]]``.
            value: ``[B, N_cam, N_v, C]``; reference_points_cam: ``[N_cam, B, HW, D, 2]``; bev_mask:
            ``[N_cam, B, HW, D]`` or its :class:`CameraHits`; spatial_shapes / level_start_index of the camera
            features.
        Returns:
            ``[B, HW, C]``.
        """
        bev_start = device_constant((0, ), torch.long, bev_shapes.device)
        tsa_value = temporal_queue(query, init_query, prev_bev, prev_valid)
        query = self.self_attn(query, tsa_value, ref_2d, bev_shapes, bev_start, query_pos=bev_pos)
        query = self.norms[0](query)
        query = self.cross_attn(query, value, reference_points_cam, bev_mask, spatial_shapes, level_start_index)
        query = self.norms[1](query)
        query = self.ffn(query)
        return self.norms[2](query)


@MODELS.register_module()
class BEVFormerEncoder(BaseModule):
    """Stack of :class:`BEVFormerEncoderLayer` plus the frame's geometry.

    Args:
        num_layers: layers (tiny/small 3, base 6). layer_cfg: config of one layer.
        pc_range: ``[x_min, y_min, z_min, x_max, y_max, z_max]``. num_points_in_pillar: D heights per BEV cell.
        static_hit_lists: False (BEVFormer): each camera's list of hit queries is padded to the longest list, whose
            length is read back from the device once per frame. True: padded to all ``bev_h * bev_w`` queries; a
            number: to that many (:func:`rebatch_hits`; a camera that sees more stops the run). The same output,
            and no read-back, so ``torch.compile`` captures the whole encoder as one graph with static shapes;
            the spatial cross-attention samples for the padding too. With BEVFormer-tiny's 50x50 BEV each camera of
            a ring of six sees at most 625 of the 2500 queries (docs/benchmarks.md "Session 27").
    """

    def __init__(self, num_layers: int, layer_cfg: dict, pc_range: Sequence[float], num_points_in_pillar: int = 4,
                 static_hit_lists: Union[bool, int] = False, init_cfg: Optional[dict] = None) -> None:
        super().__init__(init_cfg)
        if len(pc_range) != 6:
            raise ValueError(f'BEVFormerEncoder: pc_range must have 6 numbers, got {pc_range}')
        self.layers = ModuleList([MODELS.build(layer_cfg) for _ in range(num_layers)])
        self.num_layers = num_layers
        self.pc_range = list(pc_range)
        self.num_points_in_pillar = num_points_in_pillar
        if not isinstance(static_hit_lists, (bool, int)) or (static_hit_lists is not True and static_hit_lists < 0):
            raise ValueError(f'BEVFormerEncoder: static_hit_lists must be False, True or a number of queries, got '
                             f'{static_hit_lists!r}')
        self.static_hit_lists = static_hit_lists

    def camera_points(self, bev_h: int, bev_w: int, lidar2img: Tensor, pad_shape: Tuple[int, int]
                      ) -> Tuple[Tensor, Tensor]:
        """Pillar points projected into the cameras: ``(reference_points_cam [N, B, HW, D, 2],
        bev_mask [N, B, HW, D])`` (BEVFormer's ``point_sampling``, via :func:`qdbev.geometry.project_points`;
        projections in float32 like BEVFormer's ``force_fp32``)."""
        ref_3d = pillar_points(bev_h, bev_w, self.num_points_in_pillar, z_span=self.pc_range[5] - self.pc_range[2],
                               device=lidar2img.device, dtype=torch.float32)
        with torch.autocast(device_type=lidar2img.device.type, enabled=False):
            return project_points(ref_3d, lidar2img.float(), pad_shape, self.pc_range)

    def forward(self, bev_query: Tensor, value: Tensor, bev_h: int, bev_w: int, bev_pos: Tensor,
                spatial_shapes: Tensor, level_start_index: Tensor, lidar2img: Tensor, pad_shape: Tuple[int, int],
                prev_bev: Optional[Tensor] = None, prev_valid: Optional[Tensor] = None,
                shift: Optional[Tensor] = None) -> Tensor:
        """
        Args:
            bev_query: ``[B, HW, C]`` (BEV embedding + can_bus MLP). value: ``[B, N_cam, N_v, C]`` camera features.
            bev_pos: ``[B, HW, C]``. lidar2img: ``[B, N_cam, 4, 4]`` for the padded input of size ``pad_shape``
            (H, W). prev_bev: ``[B, HW, C]`` previous BEV already rotated to the current yaw, or None;
            prev_valid: ``[B]`` bool; shift: ``[B, 2]`` ego translation in normalised BEV units.
        Returns:
            ``[B, HW, C]`` BEV features.
        """
        b = bev_query.shape[0]
        reference_points_cam, bev_mask = self.camera_points(bev_h, bev_w, lidar2img, pad_shape)
        reference_points_cam = reference_points_cam.to(bev_query.dtype)
        ref_2d = bev_grid_2d(bev_h, bev_w, device=bev_query.device, dtype=bev_query.dtype)[None].expand(b, -1, -1)
        if prev_bev is not None:
            if prev_valid is None:
                prev_valid = torch.ones(b, dtype=torch.bool, device=bev_query.device)
            if shift is None:
                shift = bev_query.new_zeros(b, 2)
            shifted = ref_2d + (shift.to(ref_2d.dtype) * prev_valid[:, None].to(ref_2d.dtype))[:, None, :]
        else:
            shifted = ref_2d
        ref_queue = torch.stack((shifted, ref_2d), dim=1)[:, :, :, None, :]  # [B, 2, HW, 1, 2] (new tensors)
        bev_shapes = device_constant([(bev_h, bev_w)], torch.long, bev_query.device)
        static = self.static_hit_lists
        length = bev_h * bev_w if static is True else (static or None)
        hits = CameraHits.of(bev_mask, length)  # the same for every layer: built once
        query = bev_query
        for layer in self.layers:
            query = layer(query, bev_pos, bev_query, prev_bev, prev_valid, ref_queue, value, reference_points_cam,
                          hits, spatial_shapes, level_start_index, bev_shapes)
        return query
