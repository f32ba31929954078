"""qdbev.geometry: pillar reference points and their projection, against hand-computed pinhole numbers."""
import numpy as np
import pytest
import torch

from qdbev.geometry import pillar_points, project_points

# f = 400, principal point (400, 225), camera at the lidar origin looking along +x (right = -y, down = -z)
FWD = torch.tensor([[400.0, -400.0, 0.0, 0.0],
                    [225.0, 0.0, -400.0, 0.0],
                    [1.0, 0.0, 0.0, 0.0],
                    [0.0, 0.0, 0.0, 1.0]])
IMG = (450, 800)
PC = [-10.0, -10.0, -2.0, 10.0, 10.0, 2.0]


def normalised(points):
    lo, hi = torch.tensor(PC[:3]), torch.tensor(PC[3:])
    return ((torch.tensor(points) - lo) / (hi - lo))[None]  # [D=1, P, 3]


def test_pillar_points_layout_and_heights():
    ref = pillar_points(2, 3, 4)
    assert ref.shape == (4, 6, 3)
    # cell (row i=1, col j=2) -> flat 1 * 3 + 2 = 5; height k = 3
    assert ref[3, 5].tolist() == pytest.approx([2.5 / 3, 1.5 / 2, 3.5 / 4])
    assert ref[0, 1].tolist() == pytest.approx([1.5 / 3, 0.5 / 2, 0.5 / 4])
    assert pillar_points(2, 3, 4, z_span=8.0)[:, 0, 2].tolist() == pytest.approx(
        [0.5 / 8, (0.5 + 7 / 3) / 8, (0.5 + 14 / 3) / 8, 7.5 / 8])
    assert torch.allclose(pillar_points(2, 3, 4, z_span=4.0), ref)


def test_project_points_hand_pinhole():
    pts = normalised([[10.0, 2.0, 1.0],     # u = 400 - 400 * 2 / 10 = 320, v = 225 - 400 * 1 / 10 = 185
                      [-5.0, 0.0, 0.0],     # behind the camera
                      [5.0, 9.0, 0.0],      # u = 400 - 720 = -320: left of the image
                      [10.0, 10.0, 0.0],    # u = 0 exactly: not strictly inside
                      [4.0, -1.0, -0.5]])   # u = 500, v = 275
    uv, hit = project_points(pts, FWD[None, None], IMG, PC)
    assert uv.shape == (1, 1, 5, 1, 2) and hit.shape == (1, 1, 5, 1)
    assert uv[0, 0, 0, 0].tolist() == pytest.approx([320 / 800, 185 / 450], rel=1e-5)
    assert uv[0, 0, 4, 0].tolist() == pytest.approx([500 / 800, 275 / 450], rel=1e-5)
    assert hit[0, 0, :, 0].tolist() == [True, False, False, False, True]


def test_project_points_batch_cameras_and_float64():
    back = FWD.clone()
    back[:, :3] = FWD[:, :3] @ torch.diag(torch.tensor([-1.0, -1.0, 1.0]))  # yaw 180 deg: looks along -x
    l2i = torch.stack([torch.stack([FWD, back, FWD]), torch.stack([back, FWD, back])]).double()  # [B=2, N=3]
    pts = normalised([[8.0, 0.0, 0.0], [-8.0, 0.0, 0.0]]).expand(2, 2, -1, -1)  # [B, D=2, P=2, 3]
    uv, hit = project_points(pts, l2i, IMG, PC)
    assert uv.shape == (3, 2, 2, 2, 2) and uv.dtype == torch.float32
    # forward cameras see the point at x = +8 (centre of the image), the backward ones the point at x = -8
    assert hit[:, :, 0, :].all(-1).tolist() == [[True, False], [False, True], [True, False]]
    assert hit[:, :, 1, :].all(-1).tolist() == [[False, True], [True, False], [False, True]]
    assert uv[1, 0, 1, 0].tolist() == pytest.approx([0.5, 0.5], abs=1e-6)


def test_ring_lidar2img_hand_checked_projections():
    from qdbev.geometry import ring_lidar2img
    mats = ring_lidar2img(100, 200, (0.0, 90.0))  # focal 100 px, principal point (100, 50)

    def pix(m, p):
        q = m @ np.array([*p, 1.0])
        return q[0] / q[2], q[1] / q[2], q[2]

    np.testing.assert_allclose(pix(mats[0], (10, 0, 0)), (100, 50, 10), atol=1e-4)  # straight ahead: centre
    np.testing.assert_allclose(pix(mats[0], (10, -10, 0)), (200, 50, 10), atol=1e-4)  # 45 deg right: right edge
    np.testing.assert_allclose(pix(mats[0], (10, 0, 5)), (100, 0, 10), atol=1e-4)  # 26.6 deg up: top edge
    np.testing.assert_allclose(pix(mats[1], (0, 10, 0)), (100, 50, 10), atol=1e-4)  # yaw 90 looks along +y
