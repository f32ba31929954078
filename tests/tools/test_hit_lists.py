"""tools/hit_lists.py on the session's synthetic set (small nano config, 160x90 images padded to 96x160, 16x16
BEV): its per-camera lists are the encoder's hits from the info files' calibration, the value it suggests holds
every frame, and a configured length shorter than a frame's list is refused."""
import math
import pickle

import numpy as np
import pytest
import torch

from projects.bevformer.bevformer.encoder import BEVFormerEncoder
from projects.bevformer.bevformer.spatial_cross_attention import rebatch_hits
from tests.tools.small_nano import write_config
from tools import hit_lists
from tools._launch import CliError

pytestmark = pytest.mark.usefixtures('one_thread')
PC_RANGE = [-51.2, -51.2, -5.0, 51.2, 51.2, 3.0]
ENCODER = BEVFormerEncoder(num_layers=0, layer_cfg={}, pc_range=PC_RANGE)  # its geometry only (the nano's pillars)
CAMERAS = ['CAM_FRONT', 'CAM_FRONT_RIGHT', 'CAM_FRONT_LEFT', 'CAM_BACK', 'CAM_BACK_LEFT', 'CAM_BACK_RIGHT']


def _info_hits(path: str) -> np.ndarray:
    """Per frame and camera, the hits of the encoder's own ``camera_points`` straight from an info file's lidar2img
    (images used as rendered, 160x90, padded to 96x160 by the data preprocessor)."""
    with open(path, 'rb') as f:
        infos = pickle.load(f)['data_list']
    counts = []
    for info in infos:
        l2i = torch.tensor(np.stack([np.asarray(c['lidar2img']) for c in info['images'].values()]),
                           dtype=torch.float32)[None]
        counts.append(ENCODER.camera_points(16, 16, l2i, (96, 160))[1].any(-1).sum(-1)[:, 0].numpy())
    return np.stack(counts)


def test_longest_hit_lists_of_the_synthetic_set(tmp_path, synth_set, capsys):
    cfg = write_config(tmp_path / 'nano.py', synth_set.root)
    res = hit_lists.main([cfg, '--samples', '0'])
    out = capsys.readouterr().out
    expected = {split: _info_hits(path) for split, path in (('train', synth_set.train), ('val', synth_set.val))}
    for split, counts in expected.items():
        assert res['splits'][split] == dict(frames=len(counts), per_camera=dict(zip(CAMERAS, counts.max(0).tolist())))
    longest = max(int(c.max()) for c in expected.values())
    assert res['longest'] == longest and res['queries'] == 256
    assert 0 < longest < 256  # the cameras see part of the BEV: a static length below all queries pays
    assert res['suggested'] == min(256, math.ceil(longest * 1.05 / 32) * 32) >= longest
    assert f'model.pts_bbox_head.transformer.encoder.static_hit_lists={res["suggested"]}' in out
    assert f'longest: {longest} of 256 BEV queries' in out
    # the encoder's own check agrees: the longest list fits, one slot fewer does not
    l2i = torch.tensor(np.stack([np.asarray(c['lidar2img']) for c in
                                 pickle.load(open(synth_set.train, 'rb'))['data_list'][0]['images'].values()]),
                       dtype=torch.float32)[None]
    mask = ENCODER.camera_points(16, 16, l2i, (96, 160))[1]
    rebatch_hits(mask, longest)
    first = int(mask.any(-1).sum(-1).max())
    with pytest.raises(RuntimeError, match='a camera sees more'):
        rebatch_hits(mask, first - 1)

    # a configured length: accepted when it holds every frame, refused with the key to set otherwise
    key = 'model.pts_bbox_head.transformer.encoder.static_hit_lists'
    with pytest.raises(CliError, match=f'static_hit_lists={longest - 1} is shorter than the longest list '
                                       rf'\({longest}\); set {key}={res["suggested"]}'):
        hit_lists.main([cfg, '--samples', '0', '--cfg-options', f'{key}={longest - 1}'])
    res = hit_lists.main([cfg, '--split', 'val', '--samples', '2', '--cfg-options', f'{key}={longest}'])
    assert res['current'] == longest and res['splits']['val']['frames'] == 2
    with pytest.raises(CliError, match='no camera sees any BEV query'):  # pillars 500 m up: above every image
        hit_lists.main([cfg, '--split', 'val', '--samples', '1', '--cfg-options',
                        'model.pts_bbox_head.transformer.encoder.pc_range=[-51.2,-51.2,500,51.2,51.2,508]'])


def test_geometry_of_a_qdbev_config_and_a_foreign_one():
    from mmengine.config import Config
    cfg = Config.fromfile('configs/qdbev/qdbev_tiny_w4a6_fast.py')
    geo = hit_lists.encoder_geometry(cfg)
    assert geo['key'] == 'model.architecture.pts_bbox_head.transformer.encoder.static_hit_lists'
    assert (geo['bev_h'], geo['bev_w'], geo['num_points_in_pillar'], geo['pad_divisor']) == (50, 50, 4, 32)
    assert geo['pc_range'] == PC_RANGE
    with pytest.raises(CliError, match='not a BEVFormer config'):
        hit_lists.encoder_geometry(Config(dict(model=dict(type='FCOS3D'))))
