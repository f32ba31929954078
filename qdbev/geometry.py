"""BEV pillar points and their projection into the cameras.

One place computes which BEV cells each camera sees: BEVFormer's spatial cross-attention uses the
per-height hits, QD-BEV's view-guided distillation uses them reduced over height (M_bev).

Conventions (BEVFormer's): the BEV grid has ``bev_h`` rows along y and ``bev_w`` columns along x; the cell
(row i, column j) has flat index ``i * bev_w + j`` and centre ``((j + 0.5) / bev_w, (i + 0.5) / bev_h)`` of
``pc_range`` = [x_min, y_min, z_min, x_max, y_max, z_max] in the lidar frame.
"""
import math
from typing import Optional, Sequence, Tuple

import numpy as np
import torch
from torch import Tensor

from .device_constants import device_constant

EPS = 1e-5


def pillar_points(bev_h: int, bev_w: int, num_points_in_pillar: int, z_span: Optional[float] = None,
                  device=None, dtype=torch.float32) -> Tensor:
    """Normalised 3D reference points of every BEV pillar, ``[D, bev_h * bev_w, 3]`` in [0, 1]^3 (x, y, z).

    Heights: with ``z_span`` = None they are ``(k + 0.5) / D``; given the pc_range z span in metres they are
    BEVFormer's ``linspace(0.5, z_span - 0.5, D) / z_span`` (identical when ``z_span == D``), which is what
    released BEVFormer checkpoints were trained with.
    """
    d = num_points_in_pillar
    if z_span is None:
        zs = (torch.arange(d, device=device, dtype=dtype) + 0.5) / d
    else:
        zs = torch.linspace(0.5, z_span - 0.5, d, device=device, dtype=dtype) / z_span
    ys = (torch.arange(bev_h, device=device, dtype=dtype) + 0.5) / bev_h
    xs = (torch.arange(bev_w, device=device, dtype=dtype) + 0.5) / bev_w
    z, y, x = torch.meshgrid(zs, ys, xs, indexing='ij')  # [D, H, W]
    return torch.stack((x, y, z), dim=-1).flatten(1, 2)  # [D, H*W, 3]


def project_points(ref_3d: Tensor, lidar2img: Tensor, img_shape: Sequence[int],
                   pc_range: Sequence[float]) -> Tuple[Tensor, Tensor]:
    """Project normalised pillar points into every camera (BEVFormer's ``point_sampling``).

    Args:
        ref_3d: ``[D, HW, 3]`` or ``[B, D, HW, 3]`` normalised points (see :func:`pillar_points`).
        lidar2img: ``[B, N_cam, 4, 4]`` lidar-to-image projections of the (scaled, padded) input images.
        img_shape: ``(height, width)`` of the padded input the projections refer to.
        pc_range: ``[x_min, y_min, z_min, x_max, y_max, z_max]`` in the lidar frame.

    Returns:
        ``(uv, hit)``: ``uv`` ``[N_cam, B, HW, D, 2]`` image coordinates normalised by width/height,
        ``hit`` ``[N_cam, B, HW, D]`` bool, true where the point lies in front of the camera
        (depth > 1e-5) and strictly inside the image (0 < u < 1, 0 < v < 1).
    """
    b, n_cam = lidar2img.shape[:2]
    if ref_3d.dim() == 3:
        ref_3d = ref_3d.unsqueeze(0).expand(b, -1, -1, -1)
    lo = device_constant(pc_range[:3], ref_3d.dtype, ref_3d.device)
    hi = device_constant(pc_range[3:6], ref_3d.dtype, ref_3d.device)
    pts = ref_3d * (hi - lo) + lo  # [B, D, HW, 3] metric
    pts = torch.cat((pts, torch.ones_like(pts[..., :1])), dim=-1)  # homogeneous
    # [B, N, D, HW, 4] = [B, N, 1, 1, 4, 4] @ [B, 1, D, HW, 4, 1]
    cam = torch.matmul(lidar2img.to(pts.dtype)[:, :, None, None], pts[:, None, ..., None]).squeeze(-1)
    depth = cam[..., 2:3]
    hit = depth > EPS
    uv = cam[..., 0:2] / torch.clamp(depth, min=EPS)
    height, width = float(img_shape[0]), float(img_shape[1])
    uv = uv / device_constant((width, height), uv.dtype, uv.device)
    hit = hit & (uv[..., 0:1] > 0.0) & (uv[..., 0:1] < 1.0) & (uv[..., 1:2] > 0.0) & (uv[..., 1:2] < 1.0)
    uv = uv.permute(1, 0, 3, 2, 4)  # [N, B, HW, D, 2]
    hit = hit.squeeze(-1).permute(1, 0, 3, 2)  # [N, B, HW, D]
    return uv, hit


RING_YAWS_DEG = (0.0, -55.0, 55.0, 180.0, 110.0, -110.0)  # a six-camera ring close to nuScenes' (optical-axis yaws)


def ring_lidar2img(height: int, width: int, yaws_deg: Sequence[float] = RING_YAWS_DEG,
                   focal: Optional[float] = None) -> np.ndarray:
    """``[N_cam, 4, 4]`` lidar->image matrices of pinhole cameras at the lidar origin, camera ``i`` looking along
    ``yaws_deg[i]`` (degrees from +x towards +y, horizontal), principal point at the image centre, focal length
    ``focal`` pixels (default ``width / 2``: a 90 degree horizontal field of view). Synthetic rigs for tests,
    benchmarks and size reports where no calibration exists.

    Camera axes in the lidar frame: x right = (sin yaw, -cos yaw, 0), y down = (0, 0, -1), z forward =
    (cos yaw, sin yaw, 0).
    """
    f = width / 2 if focal is None else focal
    mats = []
    for yaw_deg in yaws_deg:
        yaw = np.radians(yaw_deg)
        l2c = np.eye(4)
        l2c[:3, :3] = [[np.sin(yaw), -np.cos(yaw), 0.0], [0.0, 0.0, -1.0], [np.cos(yaw), np.sin(yaw), 0.0]]
        k = np.eye(4)
        k[0, 0] = k[1, 1] = f
        k[0, 2], k[1, 2] = width / 2, height / 2
        mats.append(k @ l2c)
    return np.stack(mats).astype(np.float32)


def pose_can_bus(x: float, y: float, yaw_deg: float) -> np.ndarray:
    """BEVFormer's 18-value ``can_bus`` of an ego pose for synthetic rigs (no real CAN data): translation
    ``(x, y, 0)`` in slots 0:3, quaternion slot 3 (w) = 1, the yaw in radians in [0, 2 pi) at slot 16 and in degrees
    in [0, 360) at slot 17, everything else 0."""
    cb = np.zeros(18)
    cb[0], cb[1], cb[3] = x, y, 1.0
    cb[16] = math.radians(yaw_deg) % (2 * math.pi)
    cb[17] = yaw_deg % 360
    return cb
