"""Aligning the previous BEV with the current ego pose (BEVFormer's ``get_bev_features`` preamble).

BEVFormer does it in two steps, both reproduced here exactly:

* the previous BEV feature map is rotated by the yaw change ``can_bus[-1]`` (degrees) about ``rotate_center``
  (torchvision ``rotate``: nearest neighbour, zero fill, counter-clockwise in image coordinates), see
  :func:`rotate_bev`;
* the reference points with which temporal self-attention samples the previous BEV are shifted by the ego
  translation expressed in the BEV grid, see :func:`bev_shift`.

Both take the can_bus *deltas* made by :class:`~projects.bevformer.bevformer.temporal_state.TemporalState`.
:class:`EgoMotionAlign` applies the two as BEVFormer's switches say, as a module of its own (no parameters), which a
training config can compile as one part (``model.teacher_compile.parts``, ...): run eagerly it is about 30 operators
per frame and model, a kernel launch each on a GPU.
"""
import math
from typing import Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def bev_shift(can_bus: Tensor, bev_h: int, bev_w: int, real_h: float, real_w: float) -> Tensor:
    """Shift of the previous BEV's reference points caused by the ego translation, ``[B, 2]`` (x, y) in
    normalised BEV units.

    BEVFormer: the translation ``(dx, dy) = can_bus[:2]`` (global frame, metres since the previous frame) is
    rotated into the BEV frame with the current absolute yaw ``can_bus[-2]`` (rad)::

        L = |(dx, dy)|,  bev_angle = yaw_deg - atan2(dy, dx)_deg (atan2 taken in [0, 360))
        shift_y = L * cos(bev_angle) / grid_length_y / bev_h,  shift_x = L * sin(bev_angle) / grid_length_x / bev_w

    with ``grid_length = (real_h / bev_h, real_w / bev_w)``, i.e. ``shift_y = L cos / real_h``.

    Args:
        can_bus: ``[B, 18]`` can_bus deltas (BEVFormer convention).
        bev_h, bev_w: BEV grid size; real_h, real_w: its extent in metres (pc_range y and x spans).
    """
    can_bus = can_bus.to(torch.float64)
    dx, dy = can_bus[:, 0], can_bus[:, 1]
    ego_angle = can_bus[:, -2] / math.pi * 180.0
    length = torch.sqrt(dx ** 2 + dy ** 2)
    translation_angle = torch.atan2(dy, dx) / math.pi * 180.0
    translation_angle = torch.where(translation_angle < 0, translation_angle + 360.0, translation_angle)
    bev_angle = (ego_angle - translation_angle) / 180.0 * math.pi
    grid_y, grid_x = real_h / bev_h, real_w / bev_w
    shift_y = length * torch.cos(bev_angle) / grid_y / bev_h
    shift_x = length * torch.sin(bev_angle) / grid_x / bev_w
    return torch.stack((shift_x, shift_y), dim=-1).to(torch.float32)


def rotate_bev(bev: Tensor, angle_deg: Tensor, center: Optional[Sequence[float]] = None) -> Tensor:
    """Rotate BEV feature maps like ``torchvision.transforms.functional.rotate(bev, angle, center=center)``.

    Nearest-neighbour sampling, zeros outside. For an output pixel at (centred) position ``p`` the source is
    ``c + R(angle) (p - c)`` with ``R = [[cos, -sin], [sin, cos]]`` in (x right, y down) pixel coordinates,
    which is torchvision's inverse affine matrix for a counter-clockwise rotation.

    Args:
        bev: ``[B, C, H, W]`` feature maps.
        angle_deg: ``[B]`` rotation angles in degrees (BEVFormer: the yaw delta ``can_bus[-1]``).
        center: ``(x, y)`` rotation centre in pixels (torchvision convention: ``(W/2, H/2)`` is the image centre);
            None means the grid centre. Official BEVFormer configs keep the default ``[100, 100]`` for every grid.
    Returns:
        ``[B, C, H, W]`` rotated maps.
    """
    b, _, h, w = bev.shape
    if center is None:
        center = (w * 0.5, h * 0.5)
    dtype = torch.float32 if bev.dtype in (torch.float16, torch.bfloat16) else bev.dtype
    theta = angle_deg.to(device=bev.device, dtype=dtype) / 180.0 * math.pi
    cos, sin = torch.cos(theta)[:, None, None], torch.sin(theta)[:, None, None]
    # pixel centres relative to the image centre, [H, W]
    ys = torch.arange(h, device=bev.device, dtype=dtype) + 0.5 - h * 0.5
    xs = torch.arange(w, device=bev.device, dtype=dtype) + 0.5 - w * 0.5
    py, px = torch.meshgrid(ys, xs, indexing='ij')
    cx, cy = float(center[0]) - w * 0.5, float(center[1]) - h * 0.5
    qx, qy = px[None] - cx, py[None] - cy
    src_x = cos * qx - sin * qy + cx
    src_y = sin * qx + cos * qy + cy
    grid = torch.stack((src_x / (w * 0.5), src_y / (h * 0.5)), dim=-1)  # [B, H, W, 2]
    out = F.grid_sample(bev.to(dtype), grid, mode='nearest', padding_mode='zeros', align_corners=False)
    return out.to(bev.dtype)


class EgoMotionAlign(nn.Module):
    """The previous BEV aligned with the current ego pose: the reference-point shift (:func:`bev_shift`, zero
    without ``use_shift``) and the previous BEV rotated by the yaw change (:func:`rotate_bev`, with
    ``rotate_prev_bev``), BEVFormer's ``get_bev_features`` preamble. No parameters, no state-dict keys.

    Args:
        rotate_prev_bev, use_shift: BEVFormer's switches. rotate_center: as :func:`rotate_bev`'s ``center``.
    """

    def __init__(self, rotate_prev_bev: bool = True, use_shift: bool = True,
                 rotate_center: Optional[Sequence[float]] = None) -> None:
        super().__init__()
        self.rotate_prev_bev, self.use_shift = bool(rotate_prev_bev), bool(use_shift)
        self.rotate_center = None if rotate_center is None else tuple(rotate_center)

    def forward(self, can_bus: Tensor, bev_h: int, bev_w: int, real_h: float, real_w: float, dtype: torch.dtype,
                prev_bev: Optional[Tensor] = None) -> Tuple[Tensor, Optional[Tensor]]:
        """``can_bus`` ``[B, 18]`` deltas, the BEV grid ``bev_h x bev_w`` covering ``real_h x real_w`` metres,
        ``prev_bev`` ``[B, bev_h * bev_w, C]`` or None -> ``(shift [B, 2]`` in ``dtype``, the previous BEV aligned,
        or None)."""
        shift = bev_shift(can_bus, bev_h, bev_w, real_h, real_w).to(dtype) * float(self.use_shift)
        if prev_bev is not None and self.rotate_prev_bev:
            b, _, c = prev_bev.shape
            grid = prev_bev.transpose(1, 2).reshape(b, c, bev_h, bev_w)
            grid = rotate_bev(grid, can_bus[:, -1].float(), self.rotate_center)
            prev_bev = grid.reshape(b, c, bev_h * bev_w).transpose(1, 2)
        return shift, prev_bev
