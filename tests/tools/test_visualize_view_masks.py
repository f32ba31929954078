"""tools/visualize_view_masks.py on a hand-made info file with a nuScenes-like rig (lidar x = ego right)."""
import math
import os
import pickle
import subprocess
import sys

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(ROOT, 'tools'))

import visualize_view_masks as vvm  # noqa: E402

# ego frame: x forward, y left; (translation, yaw deg, focal at 1600x900) as in nuScenes
RIG = {'CAM_FRONT': ([1.70, 0.02, 1.51], 0.0, 1266.0), 'CAM_FRONT_RIGHT': ([1.55, -0.49, 1.50], -55.0, 1266.0),
       'CAM_FRONT_LEFT': ([1.52, 0.49, 1.51], 55.0, 1266.0), 'CAM_BACK': ([0.03, 0.0, 1.58], 180.0, 809.0),
       'CAM_BACK_LEFT': ([1.04, 0.48, 1.56], 110.0, 1266.0), 'CAM_BACK_RIGHT': ([1.04, -0.48, 1.56], -110.0, 1266.0)}
LIDAR_T = np.array([0.94, 0.0, 1.84])
LIDAR2EGO_R = np.array([[0.0, 1.0, 0.0], [-1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])  # lidar x -> ego -y (right), y -> ego x


def _lidar2img(cam: str, width: int = 1600, height: int = 900) -> np.ndarray:
    t, yaw_deg, f = RIG[cam]
    yaw = math.radians(yaw_deg)
    fwd = np.array([math.cos(yaw), math.sin(yaw), 0.0])  # optical axis in the ego frame
    right = np.array([math.sin(yaw), -math.cos(yaw), 0.0])
    down = np.array([0.0, 0.0, -1.0])
    cam_from_ego = np.eye(4)
    cam_from_ego[:3, :3] = np.stack([right, down, fwd])
    cam_from_ego[:3, 3] = -cam_from_ego[:3, :3] @ np.asarray(t)
    ego_from_lidar = np.eye(4)
    ego_from_lidar[:3, :3], ego_from_lidar[:3, 3] = LIDAR2EGO_R, LIDAR_T
    k = np.eye(4)
    k[0, 0] = k[1, 1] = f
    k[0, 2], k[1, 2] = width / 2, height / 2
    return k @ cam_from_ego @ ego_from_lidar


@pytest.fixture()
def info_file(tmp_path):
    lidar2ego = np.eye(4)
    lidar2ego[:3, :3], lidar2ego[:3, 3] = LIDAR2EGO_R, LIDAR_T
    sample = dict(token='abcdef0123', lidar_points=dict(lidar2ego=lidar2ego.tolist()),
                  images={cam: dict(img_path=f'{cam}.jpg', lidar2img=_lidar2img(cam).tolist()) for cam in RIG})
    path = tmp_path / 'nuscenes_infos_val.pkl'
    with open(path, 'wb') as f:
        pickle.dump(dict(metainfo=dict(version='v1.0-mini'), data_list=[sample]), f)
    return path


def _cell(masks, x, y):
    """Mask value of the cell containing lidar point (x, y) on the BEVFormer-tiny grid (50 x 50 over +-51.2 m)."""
    return bool(masks[int((y + 51.2) / 102.4 * 50), int((x + 51.2) / 102.4 * 50)])


def test_masks_follow_the_lidar_frame(info_file):
    sample = vvm.load_sample(str(info_file), 0)
    cams, l2i, pad = vvm.sample_rig(sample, 0.5, (900, 1600), 32)
    assert cams[0] == 'CAM_FRONT' and pad == (480, 800)
    masks = vvm.compute_masks(l2i, pad, vvm.BEVGeometry.from_config(vvm.TINY))
    front, back = masks[cams.index('CAM_FRONT')], masks[cams.index('CAM_BACK')]
    # CAM_FRONT looks along lidar +y (the ego's forward), CAM_BACK along -y; lidar +x is the ego's right
    assert _cell(front, 0.0, 30.0) and not _cell(front, 0.0, -30.0) and not _cell(front, 30.0, 0.0)
    assert _cell(back, 0.0, -30.0) and not _cell(back, 0.0, 30.0)
    assert _cell(masks[cams.index('CAM_BACK_RIGHT')], 30.0, 0.0) and _cell(masks[cams.index('CAM_BACK_LEFT')], -30.0, 0)
    assert _cell(masks[cams.index('CAM_FRONT_RIGHT')], 25.0, 20.0)
    ys = (np.arange(50) + 0.5) / 50 * 102.4 - 51.2
    assert np.all(ys[np.nonzero(front)[0]] > -3.0)  # nothing behind the front camera (it sits 1.7 m ahead)
    assert (masks.sum(0) >= 2).any()  # neighbouring cameras overlap
    assert np.allclose(vvm.ego_heading(sample), [0.0, 1.0])


def test_cli_writes_png_and_refuses_bad_input(info_file, tmp_path):
    out = tmp_path / 'masks.png'
    tool = os.path.join(ROOT, 'tools', 'visualize_view_masks.py')
    run = subprocess.run([sys.executable, tool, str(info_file), '--sample-idx', '0', '--out', str(out),
                          '--img-size', '900', '1600', '--scale', '0.5'], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    assert out.read_bytes()[:8] == b'\x89PNG\r\n\x1a\n' and 'CAM_FRONT' in run.stdout
    bad = subprocess.run([sys.executable, tool, str(info_file), '--sample-idx', '7', '--out', str(out),
                          '--img-size', '900', '1600'], capture_output=True, text=True)
    assert bad.returncode == 2 and bad.stderr.count('\n') == 1 and '--sample-idx 7 is out of range' in bad.stderr


@pytest.mark.parametrize('prep, divisor', [("dict(type='Det3DDataPreprocessor', pad_size_divisor=32)", 32),
                                           ("dict(type='Det3DDataPreprocessor')", 1)])
def test_settings_read_the_pad_divisor_the_model_uses(tmp_path, prep, divisor):
    """A config without ``pad_size_divisor`` pads like mmdet's preprocessor does by default: not at all."""
    cfg = tmp_path / 'cfg.py'
    cfg.write_text(
        f"model = dict(data_preprocessor={prep}, pts_bbox_head=dict(bev_h=20, bev_w=30, transformer=dict(\n"
        "    encoder=dict(pc_range=[-51.2, -51.2, -5.0, 51.2, 51.2, 3.0]))))\n"
        "val_dataloader = dict(dataset=dict(data_root='d/', ann_file='val.pkl', pipeline=[\n"
        "    dict(type='ScaleMultiViewImage', scale=0.5)]))\n")
    st = vvm.settings_from_config(str(cfg))
    assert (st['pad_divisor'], st['scale'], st['bev_h'], st['bev_w']) == (divisor, 0.5, 20, 30)
    assert st['info'] == os.path.join('d/', 'val.pkl')
