"""Which BEV cells each camera sees (``M_bev`` of QD-BEV Eq. 5), reduced over the pillar height."""
from typing import Optional, Sequence

import torch
from torch import Tensor

from qdbev.geometry import pillar_points, project_points


def _check_rig(lidar2img: Tensor, img_shape: Sequence[int], bev_h: int, bev_w: int,
               pc_range: Sequence[float], num_points_in_pillar: int) -> None:
    if not torch.is_tensor(lidar2img) or lidar2img.dim() != 4 or tuple(lidar2img.shape[2:]) != (4, 4):
        shape = tuple(lidar2img.shape) if torch.is_tensor(lidar2img) else type(lidar2img).__name__
        raise ValueError(f'view_masks: lidar2img must be a tensor [B, N_cam, 4, 4], got {shape}; stack the '
                         f"img_metas 'lidar2img' matrices per sample")
    if len(img_shape) != 2 or min(img_shape) <= 0:
        raise ValueError(f'view_masks: img_shape must be (height, width) > 0 of the padded input, got {img_shape}')
    if int(bev_h) <= 0 or int(bev_w) <= 0 or int(num_points_in_pillar) <= 0:
        raise ValueError(f'view_masks: bev_h, bev_w and num_points_in_pillar must be > 0, got '
                         f'{bev_h}, {bev_w}, {num_points_in_pillar}')
    if len(pc_range) != 6 or any(pc_range[k + 3] <= pc_range[k] for k in range(3)):
        raise ValueError(f'view_masks: pc_range must be [x_min, y_min, z_min, x_max, y_max, z_max] with '
                         f'max > min, got {list(pc_range)}')


def view_masks(lidar2img: Tensor, img_shape: Sequence[int], bev_h: int, bev_w: int,
               pc_range: Sequence[float], num_points_in_pillar: int = 4,
               z_span: Optional[float] = None) -> Tensor:
    """``M_bev`` of QD-BEV Eq. 5: the BEV cells each camera sees, ``BoolTensor[N_cam, B, bev_h*bev_w]``.

    Cell (row i along y, column j along x) has flat index ``i * bev_w + j``; its pillar holds
    ``num_points_in_pillar`` points at heights ``(k + 0.5) / D`` of the pc_range z span. A cell belongs to
    a camera when any of its pillar points projects with depth > 1e-5 strictly inside the image
    (:func:`qdbev.geometry.project_points`, reduced with ``any`` over the height).

    Args:
        lidar2img: ``[B, N_cam, 4, 4]`` lidar-to-image projections of the padded input images.
        img_shape: ``(height, width)`` of the padded input.
        bev_h, bev_w: BEV grid rows (along y) and columns (along x).
        pc_range: ``[x_min, y_min, z_min, x_max, y_max, z_max]`` in the lidar frame (metres).
        num_points_in_pillar: ``D`` points per pillar.
        z_span: None for the heights above; BEVFormer's encoder samples ``linspace(0.5, z_span - 0.5, D) / z_span``
            (see :func:`qdbev.geometry.pillar_points`): pass ``pc_range[5] - pc_range[2]`` to get exactly the
            encoder's own ``bev_mask`` reduced over height.
    """
    _check_rig(lidar2img, img_shape, bev_h, bev_w, pc_range, num_points_in_pillar)
    ref = pillar_points(int(bev_h), int(bev_w), int(num_points_in_pillar), z_span=z_span,
                        device=lidar2img.device)  # [D, HW, 3]
    _, hit = project_points(ref, lidar2img, img_shape, pc_range)  # [N, B, HW, D]
    return hit.any(dim=-1)
