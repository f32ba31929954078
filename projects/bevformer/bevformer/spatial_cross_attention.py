"""BEVFormer's spatial cross-attention (SCA): each BEV query samples the cameras its pillar hits.

The camera hits come from :func:`qdbev.geometry.project_points` (computed once per frame by the encoder).
Per (sample, camera) only the hit queries are gathered ("rebatching", which bounds memory by the largest
per-camera hit count), attended into that camera with :class:`MSDeformableAttention3D`, scattered back and
averaged over the number of cameras that hit each query.
"""
from typing import NamedTuple, Optional, Tuple, Union

import torch
from mmdet3d.registry import MODELS
from mmengine.model import BaseModule
from torch import Tensor, nn

from .ms_deform_attn import xavier_linear_


def rebatch_hits(bev_mask: Tensor, length: Optional[int] = None) -> Tuple[Tensor, Tensor]:
    """Indices of the BEV queries each (sample, camera) sees, padded to the longest list or to ``length``.

    Args:
        bev_mask: ``[N_cam, B, HW, D]`` bool hits of the pillar points.
        length: None (BEVFormer): pad to the longest list, whose length is read back from the device (a stream
            synchronisation, and a graph break under ``torch.compile``). A number: pad every list to that many
            slots (at most ``HW``), known on the host, so the shapes stay static; a longer list stops the run (an
            assertion checked on the device, without a read-back: on a GPU it surfaces as a device-side assert).
    Returns:
        ``(index, valid)``, both ``[B * N_cam, max_len]`` (row ``b * N_cam + cam``): ``index`` the query
        indices in ascending order (0 in padding), ``valid`` true where the slot holds a real query.
    """
    hit = bev_mask.any(-1).permute(1, 0, 2)  # [B, N, HW]
    b, n, hw = hit.shape
    hit = hit.reshape(b * n, hw)
    counts = hit.sum(-1)
    if length is None:
        max_len = int(counts.max()) if counts.numel() else 0
    else:
        max_len = min(int(length), hw)
        if max_len < hw and counts.numel():
            counts = hit_counts_within(counts, max_len)
    order = torch.sort((~hit).to(torch.int8), dim=-1, stable=True).indices[:, :max_len]
    valid = torch.arange(max_len, device=hit.device)[None, :] < counts[:, None]
    return torch.where(valid, order, torch.zeros_like(order)), valid


@torch.library.custom_op('qdbev::hit_counts_within', mutates_args=())
def hit_counts_within(counts: Tensor, max_len: int) -> Tensor:
    """``counts`` (a copy), after an assertion on the device that none exceeds ``max_len`` (no read-back): the
    check of :func:`rebatch_hits`'s static length. An operator of its own, whose output the hit lists use, so that
    a compiled graph keeps the assertion as one node with a shape: torch 2.11's partitioner of a training graph
    fails on a bare ``torch._assert_async`` node ("didn't have `val` metadata")."""
    torch._assert_async(counts.max() <= max_len, f'static_hit_lists={max_len}: a camera sees more BEV queries than '
                        'that; raise it, or set it to True (all of them)')
    return counts.clone()


@hit_counts_within.register_fake
def _(counts, max_len):
    return torch.empty_like(counts)


def hit_count(bev_mask: Tensor) -> Tensor:
    """Number of cameras hitting each BEV query, ``[B, HW]`` (at least 1): ``bev_mask`` ``[N_cam, B, HW, D]``."""
    return bev_mask.any(-1).sum(0).clamp(min=1)


class CameraHits(NamedTuple):
    """The hits of one frame's ``bev_mask`` ``[N_cam, B, HW, D]`` as the spatial cross-attention uses them: the
    padded hit lists of :func:`rebatch_hits` (``index``, ``valid``) and :func:`hit_count` (``count``). Every
    encoder layer of a frame needs the same; built once per frame (:meth:`of`), the length of the longest list is
    read back from the device once per frame instead of once per layer (a synchronisation of the stream on a GPU)."""
    mask: Tensor
    index: Tensor
    valid: Tensor
    count: Tensor

    @classmethod
    def of(cls, bev_mask: Tensor, length: Optional[int] = None) -> 'CameraHits':
        index, valid = rebatch_hits(bev_mask, length)
        return cls(bev_mask, index, valid, hit_count(bev_mask))


@MODELS.register_module()
class SpatialCrossAttention(BaseModule):
    """Average over hitting cameras of per-camera 3D deformable attention, output projection, residual.

    Args:
        embed_dims: channels C. num_cams: cameras. pc_range: kept for config compatibility.
        dropout: on the projected output before the residual.
        deformable_attention: config of the per-camera attention (:class:`MSDeformableAttention3D`).
    """

    def __init__(self, embed_dims: int = 256, num_cams: int = 6, pc_range: Optional[list] = None,
                 dropout: float = 0.1, deformable_attention: Optional[dict] = None,
                 batch_first: bool = True, init_cfg: Optional[dict] = None) -> None:
        super().__init__(init_cfg)
        if deformable_attention is None:
            deformable_attention = dict(type='MSDeformableAttention3D', embed_dims=embed_dims, num_levels=4)
        self.embed_dims, self.num_cams, self.pc_range = embed_dims, num_cams, pc_range
        self.deformable_attention = MODELS.build(deformable_attention)
        self.output_proj = nn.Linear(embed_dims, embed_dims)
        self.dropout = nn.Dropout(dropout)
        self.init_weights()

    def init_weights(self) -> None:
        """Xavier output projection (the inner attention initialises itself)."""
        xavier_linear_(self.output_proj)
        self._is_init = True

    def forward(self, query: Tensor, value: Tensor, reference_points_cam: Tensor,
                bev_mask: Union[Tensor, CameraHits], spatial_shapes: Tensor, level_start_index: Tensor) -> Tensor:
        """
        Args:
            query: ``[B, HW, C]`` BEV queries (also the residual).
            value: ``[B, N_cam, N_v, C]`` multi-level camera features (+ camera/level embeddings).
            reference_points_cam: ``[N_cam, B, HW, D, 2]`` normalised image positions of the pillar points.
            bev_mask: ``[N_cam, B, HW, D]`` bool hits (depth > eps, strictly inside the image), or the frame's
                :class:`CameraHits` of it (the encoder builds them once for all its layers).
            spatial_shapes: ``[L, 2]``; level_start_index: ``[L]``.
        Returns:
            ``[B, HW, C]``.
        """
        b, hw, c = query.shape
        n = value.shape[1]
        given = bev_mask if isinstance(bev_mask, CameraHits) else None
        mask = bev_mask if given is None else given.mask
        if reference_points_cam.shape[:3] != (n, b, hw) or mask.shape[:3] != (n, b, hw):
            raise ValueError(f'SpatialCrossAttention: camera points {tuple(reference_points_cam.shape)} / mask '
                             f'{tuple(mask.shape)} do not match {n} cameras, batch {b}, {hw} queries')
        hits = given if given is not None else CameraHits.of(mask)
        d = reference_points_cam.shape[3]
        index, valid = hits.index, hits.valid  # [B*N, M]
        slots = torch.zeros_like(query)
        if index.shape[1] > 0:
            batch_of_row = torch.arange(b, device=query.device).repeat_interleave(n)  # row r = b*N + cam
            queries = query[batch_of_row[:, None], index]  # [B*N, M, C]
            ref = reference_points_cam.permute(1, 0, 2, 3, 4).reshape(b * n, hw, d, 2)
            ref = torch.gather(ref, 1, index[:, :, None, None].expand(-1, -1, d, 2))
            queries = queries * valid[..., None]
            ref = ref * valid[..., None, None]
            out = self.deformable_attention(queries, value.reshape(b * n, -1, c), ref, spatial_shapes,
                                            level_start_index)  # [B*N, M, C]
            out = out * valid[..., None].to(out.dtype)
            flat_index = (index + batch_of_row[:, None] * hw).reshape(-1)
            # accumulate in the attention's dtype (float32 where autocast runs the query projections in bf16)
            slots = slots.reshape(b * hw, c).to(out.dtype).index_add(0, flat_index, out.reshape(-1, c)).view(b, hw, c)
        slots = slots / hits.count[..., None].to(slots.dtype)
        return self.dropout(self.output_proj(slots)) + query
