"""M_bev on hand-built camera rigs: the expected cells come from explicit per-point angle tests, no matrices."""
import math

import pytest
import torch

from qdbev.distill import view_masks

IMG_H, IMG_W = 450, 800


def lidar2img_by_hand(focal, cam_pos, yaw_deg):
    """4x4 = K @ [R | -R c] for a level pinhole camera at ``cam_pos`` looking along yaw (lidar x fwd, y left, z up).

    Camera axes in the lidar frame: x_cam (right) = (sin yaw, -cos yaw, 0), y_cam (down) = (0, 0, -1),
    z_cam (forward) = (cos yaw, sin yaw, 0); principal point at the image centre.
    """
    yaw = math.radians(yaw_deg)
    rot = torch.tensor([[math.sin(yaw), -math.cos(yaw), 0.0],
                        [0.0, 0.0, -1.0],
                        [math.cos(yaw), math.sin(yaw), 0.0]], dtype=torch.float64)
    ext = torch.eye(4, dtype=torch.float64)
    ext[:3, :3] = rot
    ext[:3, 3] = -rot @ torch.tensor(cam_pos, dtype=torch.float64)
    intr = torch.eye(4, dtype=torch.float64)
    intr[0, 0] = intr[1, 1] = focal
    intr[0, 2], intr[1, 2] = IMG_W / 2.0, IMG_H / 2.0
    return (intr @ ext).float()


def expected_cells(focal, cam_pos, yaw_deg, bev_h, bev_w, pc_range, d):
    """Set of flat cells with a pillar point inside the camera's angular frustum, and the smallest margin."""
    half_h = math.atan((IMG_W / 2.0) / focal)  # horizontal half field of view
    half_v = math.atan((IMG_H / 2.0) / focal)
    yaw = math.radians(yaw_deg)
    x0, y0, z0, x1, y1, z1 = pc_range
    cells, margin = set(), float('inf')
    for i in range(bev_h):
        for j in range(bev_w):
            x = x0 + (j + 0.5) / bev_w * (x1 - x0)
            y = y0 + (i + 0.5) / bev_h * (y1 - y0)
            for k in range(d):
                z = z0 + (k + 0.5) / d * (z1 - z0)
                dx, dy, dz = x - cam_pos[0], y - cam_pos[1], z - cam_pos[2]
                forward = dx * math.cos(yaw) + dy * math.sin(yaw)
                left = -dx * math.sin(yaw) + dy * math.cos(yaw)
                azimuth = math.atan2(left, forward)  # angle off the optical axis, in (-pi, pi]
                elevation = math.atan2(dz, forward) if forward > 0 else math.pi
                inside = abs(azimuth) < half_h and abs(elevation) < half_v
                margin = min(margin, abs(abs(azimuth) - half_h), abs(abs(elevation) - half_v))
                if inside:
                    cells.add(i * bev_w + j)
    return cells, margin


def mask_cells(row):
    return set(torch.nonzero(row).flatten().tolist())


PC = [-10.0, -6.0, -2.0, 10.0, 6.0, 2.0]


def test_single_forward_camera_lights_exactly_its_frustum():
    bev_h, bev_w, d = 6, 10, 4  # bev_h != bev_w; cells 2 m, heights -1.5 .. 1.5
    focal, pos = IMG_W / 2.0, (0.5, 0.0, 0.0)  # 90 deg horizontal field of view
    l2i = lidar2img_by_hand(focal, pos, 0.0)[None, None]
    masks = view_masks(l2i, (IMG_H, IMG_W), bev_h, bev_w, PC, d)
    assert masks.shape == (1, 1, 60) and masks.dtype == torch.bool
    cells, margin = expected_cells(focal, pos, 0.0, bev_h, bev_w, PC, d)
    assert margin > 1e-4  # no pillar point sits on the frustum boundary
    assert mask_cells(masks[0, 0]) == cells
    # sanity on the hand-derived set: only columns in front (x > 0.5 m), not the x = 1 m column (too steep
    # vertically for every height), and the row/column convention i * bev_w + j with rows along y
    assert len(cells) == 2 + 4 + 6 + 6  # columns x = 3, 5, 7, 9 m: |y| < x - 0.5
    assert all(c % bev_w >= 6 for c in cells)
    assert 2 * bev_w + 9 in cells and 2 * bev_w + 5 not in cells  # (y=-1, x=9) seen; (y=-1, x=1) not


def test_six_cameras_two_samples_and_translation():
    bev_h, bev_w, d = 8, 5, 3
    pc = [-20.0, -30.0, -3.0, 20.0, 30.0, 3.0]
    focal = (IMG_W / 2.0) / math.tan(math.radians(35.0))  # 70 deg horizontal field of view
    rigs = [
        [((1.3, 0.1, 1.6), yaw) for yaw in (3.0, 58.0, 123.0, 177.0, 236.0, 301.0)],
        [((0.4, -0.7, 1.2), yaw) for yaw in (31.0, 92.0, 148.0, 213.0, 268.0, 329.0)],
    ]
    l2i = torch.stack([torch.stack([lidar2img_by_hand(focal, p, y) for p, y in rig]) for rig in rigs])
    masks = view_masks(l2i, (IMG_H, IMG_W), bev_h, bev_w, pc, d)
    assert masks.shape == (6, 2, 40)
    for b, rig in enumerate(rigs):
        for n, (pos, yaw) in enumerate(rig):
            cells, margin = expected_cells(focal, pos, yaw, bev_h, bev_w, pc, d)
            assert margin > 1e-4
            assert mask_cells(masks[n, b]) == cells, (b, n)
    assert masks.any(0).float().mean() > 0.5  # the rig covers most of the grid; the test is not vacuous


def test_camera_facing_away_from_grid_sees_nothing():
    l2i = lidar2img_by_hand(400.0, (0.0, 0.0, 50.0), 0.0)[None, None]  # 48 m above every pillar point
    assert not view_masks(l2i, (IMG_H, IMG_W), 4, 4, PC, 4).any()


def test_bad_rig_inputs_raise_clear_errors():
    with pytest.raises(ValueError, match=r'lidar2img must be a tensor \[B, N_cam, 4, 4\]'):
        view_masks(torch.eye(4), (IMG_H, IMG_W), 4, 4, PC)
    with pytest.raises(ValueError, match='img_shape'):
        view_masks(torch.eye(4)[None, None], (IMG_H,), 4, 4, PC)
    with pytest.raises(ValueError, match='pc_range'):
        view_masks(torch.eye(4)[None, None], (IMG_H, IMG_W), 4, 4, [0, 0, 0, 1, 1])
