"""BEVFormerNuScenesDataset on a hand-made info file: queue selection, scene starts, test mode, packing, the data
preprocessor on the packed [T*N, 3, H, W] sample, and the refusal of non-BEVFormer infos.

Every camera image of frame ``f`` is a uniform PNG whose B, G, R values are ``5 f + cam``, ``+1``, ``+2`` (exact
through the loader and a bilinear resize), so the packed tensor tells which frame and camera each slice holds.
"""
import copy
import os.path as osp
import pickle
import random
from collections import Counter

import cv2
import numpy as np
import pytest
import torch
from mmengine.config import Config
from mmengine.dataset import pseudo_collate
from mmengine.registry import init_default_scope

import projects.bevformer.bevformer  # noqa: F401
from mmdet3d.registry import DATASETS, MODELS
from mmdet3d.structures import LiDARInstance3DBoxes
from projects.bevformer.bevformer.datasets import queue_indices

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__)))))
CAMS = ('CAM_FRONT', 'CAM_FRONT_RIGHT', 'CAM_FRONT_LEFT', 'CAM_BACK', 'CAM_BACK_LEFT', 'CAM_BACK_RIGHT')
H, W = 64, 96  # original images; the pipelines below scale them by 0.5 -> 32 x 48
# scenes in the file: A (5 frames), B (2 frames), C (1 frame); frames get global ids f = 0..7 in time order
SCENES = (('scene-A', 5), ('scene-B', 2), ('scene-C', 1))
MMDET3D_LABEL = dict(car=0, barrier=9, pedestrian=7)  # mmdet3d 1.x info labels (its METAINFO order)
BEVFORMER_LABEL = dict(car=0, barrier=5, pedestrian=8)  # the configs' class order (BEVFormer's)


def frame_value(f: int, cam: int) -> int:
    return 5 * f + cam


def rig_lidar2cam(yaw_deg: float) -> np.ndarray:
    yaw = np.deg2rad(yaw_deg)
    l2c = np.eye(4)
    l2c[:3, :3] = [[np.sin(yaw), -np.cos(yaw), 0.0], [0.0, 0.0, -1.0], [np.cos(yaw), np.sin(yaw), 0.0]]
    return l2c


def instance(name, xyz, size=(4.0, 2.0, 2.0), vel=(1.0, -0.5), valid=True):
    return dict(bbox_3d=list(xyz) + list(size) + [0.3], bbox_label=MMDET3D_LABEL[name],
                bbox_label_3d=MMDET3D_LABEL[name], velocity=list(vel), num_lidar_pts=10, num_radar_pts=0,
                bbox_3d_isvalid=valid)


def make_infos(root: str, drop_field: str = '') -> str:
    """Images + a v2 info pkl with the BEVFormer fields, entries stored out of time order."""
    k = np.array([[40.0, 0.0, 48.0], [0.0, 40.0, 32.0], [0.0, 0.0, 1.0]])
    entries, f = [], 0
    for scene, n in SCENES:
        for frame_idx in range(n):
            images = {}
            for c, cam in enumerate(CAMS):
                name = f'{scene}_{frame_idx}_{cam}.png'
                v = frame_value(f, c)
                img = np.empty((H, W, 3), np.uint8)
                img[...] = (v, v + 1, v + 2)  # B, G, R
                folder = osp.join(root, 'samples', cam)
                if not osp.isdir(folder):
                    import os
                    os.makedirs(folder)
                cv2.imwrite(osp.join(folder, name), img)
                l2c = rig_lidar2cam((0, -55, 55, 180, 110, -110)[c])
                k4 = np.eye(4)
                k4[:3, :3] = k
                images[cam] = dict(img_path=name, cam2img=k.tolist(), lidar2cam=l2c.tolist(),
                                   lidar2img=(k4 @ l2c).tolist(), sample_data_token=f'sd{f}{c}', timestamp=f * 0.5,
                                   cam2ego=np.eye(4).tolist())
            can_bus = np.zeros(18)
            can_bus[0] = 100.0 * f
            can_bus[3] = 1.0
            entry = dict(sample_idx=f, token=f'tok{f}', timestamp=f * 0.5, ego2global=np.eye(4).tolist(),
                         lidar_points=dict(num_pts_feats=5, lidar_path=f'{f}.bin', lidar2ego=np.eye(4).tolist()),
                         images=images, scene_token=scene, frame_idx=frame_idx, can_bus=can_bus.tolist(),
                         prev='', next='',
                         instances=[instance('car', (10.0, 2.0, 1.0)), instance('barrier', (-5.0, 8.0, 0.5)),
                                    instance('pedestrian', (3.0, -20.0, 0.9), vel=(0.0, 0.0)),
                                    instance('car', (60.0, 0.0, 1.0)),  # outside the BEV range
                                    instance('car', (5.0, 5.0, 1.0), valid=False)])  # no lidar/radar points
            if drop_field:
                entry.pop(drop_field)
            entries.append(entry)
            f += 1
    order = [3, 0, 6, 4, 1, 7, 2, 5]  # scene A first appears first, then B, then C
    path = osp.join(root, 'infos.pkl')
    with open(path, 'wb') as fh:
        pickle.dump(dict(metainfo=dict(categories={}, dataset='nuscenes', version='v1.0-mini', info_version='1.1'),
                         data_list=[entries[i] for i in order]), fh)
    return path


@pytest.fixture(scope='module')
def data_root(tmp_path_factory):
    root = str(tmp_path_factory.mktemp('bevformer_data'))
    make_infos(root)
    return root


def config_dataset(data_root: str, split: str, photometric: bool = False, **overrides) -> dict:
    """The dataset dict of configs/bevformer/bevformer_tiny.py (scale 0.5) pointed at the fake data."""
    cfg = Config.fromfile(osp.join(ROOT, 'configs/bevformer/bevformer_tiny.py'))
    ds = copy.deepcopy((cfg.train_dataloader if split == 'train' else cfg.test_dataloader).dataset)
    if not photometric:
        ds.pipeline = [t for t in ds.pipeline if t['type'] != 'MultiViewWrapper']
    ds.update(data_root=data_root, ann_file='infos.pkl', **overrides)
    return ds


def build(data_root, split='train', **overrides):
    init_default_scope('mmdet3d')
    return DATASETS.build(config_dataset(data_root, split, **overrides))


def frames_in(img: torch.Tensor):
    """Frame ids of a packed ``[T * 6, 3, h, w]`` tensor, checking that every camera slice is the right one."""
    values = img[:, 0, 0, 0].float().round().long().tolist()
    ids = []
    for t in range(len(values) // 6):
        f, c0 = divmod(values[6 * t], 5)
        assert c0 == 0 and values[6 * t:6 * t + 6] == [frame_value(f, c) for c in range(6)]
        ids.append(f)
    return ids


# ---------------------------------------------------------------- queue selection (pure function)
def test_queue_indices_follow_bevformer_sampling():
    seen = Counter()
    for seed in range(200):
        q = queue_indices(10, 3, scene_first=0, rng=random.Random(seed))
        assert q[-1] == 10 and len(q) == 3 and q[0] < q[1] < 10 and set(q[:2]) <= {7, 8, 9}
        seen[tuple(q[:2])] += 1
    assert set(seen) == {(7, 8), (7, 9), (8, 9)}  # every pair of the 3 preceding frames occurs


@pytest.mark.parametrize('index, first, expected', [
    (4, 4, [4, 4, 4]),  # scene start: the first frame repeated
    (5, 4, [4, 4, 5]),  # candidates 2, 3, 4 -> two of them, both clamped to the scene start
    (7, 4, None),  # candidates 4, 5, 6 all inside the scene
])
def test_queue_indices_at_scene_starts(index, first, expected):
    for seed in range(50):
        q = queue_indices(index, 3, scene_first=first, rng=random.Random(seed))
        if expected is not None:
            assert q == expected
        else:
            assert q[-1] == 7 and q[0] < q[1] and set(q[:2]) <= {4, 5, 6}
    assert queue_indices(9, 1, scene_first=0) == [9]


# ---------------------------------------------------------------- dataset
def test_sorted_by_scene_and_frame(data_root):
    ds = build(data_root)
    assert ds.metainfo['version'] == 'v1.0-mini'  # from the info file (NuScenesMetric evaluates that version)
    order = [(ds.get_data_info(i)['scene_token'], ds.get_data_info(i)['frame_idx']) for i in range(len(ds))]
    assert order == [(s, k) for s, n in SCENES for k in range(n)]
    assert [ds.scene_first(i) for i in range(len(ds))] == [0, 0, 0, 0, 0, 5, 5, 7]


def test_training_queue_is_same_scene_and_time_ordered(data_root):
    ds = build(data_root)
    random.seed(0)
    seen = set()
    for _ in range(30):
        sample = ds[4]  # scene A frame 4 (global frame 4)
        ids = frames_in(sample['inputs']['img'])
        meta = sample['data_samples'].metainfo
        assert ids[-1] == 4 and ids[0] < ids[1] < 4 and set(ids[:2]) <= {1, 2, 3}
        assert [q['frame_idx'] for q in meta['queue_metas']] == ids[:2]
        assert [q['can_bus'][0] for q in meta['queue_metas']] == [100.0 * f for f in ids[:2]]
        assert all(q['scene_token'] == 'scene-A' for q in meta['queue_metas'])
        seen.add(tuple(ids[:2]))
    assert len(seen) > 1  # the previous frames are drawn at random


@pytest.mark.parametrize('index, expected', [(5, [5, 5, 5]), (6, [5, 5, 6]), (7, [7, 7, 7]), (1, [0, 0, 1])])
def test_scene_start_repeats_the_first_frame(data_root, index, expected):
    ds = build(data_root)
    for _ in range(5):
        sample = ds[index]
        assert frames_in(sample['inputs']['img']) == expected
        meta = sample['data_samples'].metainfo
        assert {q['scene_token'] for q in meta['queue_metas']} == {meta['scene_token']}


def test_test_mode_has_no_queue(data_root):
    ds = build(data_root, split='test')
    assert len(ds) == 8
    for i in range(len(ds)):
        sample = ds[i]
        assert sample['inputs']['img'].shape == (6, 3, H // 2, W // 2)
        assert frames_in(sample['inputs']['img']) == [i]
        assert sample['data_samples'].metainfo['queue_metas'] == []
        assert sample['data_samples'].metainfo['frame_idx'] == [k for _, n in SCENES for k in range(n)][i]


def test_packed_sample_follows_the_interface(data_root):
    ds = build(data_root, photometric=True)  # the full tiny train pipeline
    sample = ds[3]
    img = sample['inputs']['img']
    assert img.shape == (3 * 6, 3, H // 2, W // 2) and img.dtype == torch.float32
    ds_sample = sample['data_samples']
    meta = ds_sample.metainfo
    for key in ('sample_idx', 'token', 'scene_token', 'frame_idx', 'lidar2img', 'img_shape', 'can_bus', 'num_cams',
                'box_type_3d', 'queue_metas'):
        assert key in meta, key
    assert meta['token'] == 'tok3' and meta['sample_idx'] == 3 and meta['num_cams'] == 6
    assert meta['img_shape'] == (H // 2, W // 2)
    assert meta['can_bus'].shape == (18, ) and meta['can_bus'][0] == 300.0
    # lidar2img of the resized image = diag(0.5, 0.5, 1, 1) @ the info's lidar2img
    k4 = np.diag([20.0, 20.0, 1.0, 1.0])
    k4[0, 2], k4[1, 2] = 24.0, 16.0
    np.testing.assert_allclose(meta['lidar2img'][2], k4 @ rig_lidar2cam(55), atol=1e-12)
    assert len(meta['queue_metas']) == 2
    for q in meta['queue_metas']:
        assert set(q) >= {'lidar2img', 'can_bus', 'scene_token', 'frame_idx', 'img_shape'}
        assert q['img_shape'] == (H // 2, W // 2) and q['lidar2img'].shape == (6, 4, 4)
    # ground truth: range filter drops x=60, use_valid_flag drops the invalid car; BEVFormer label order;
    # z of the box bottom = centre z - h/2; velocity appended (box_dim 9)
    gt = ds_sample.gt_instances_3d
    assert isinstance(gt.bboxes_3d, LiDARInstance3DBoxes) and gt.bboxes_3d.box_dim == 9
    assert gt.labels_3d.tolist() == [BEVFORMER_LABEL['car'], BEVFORMER_LABEL['barrier'],
                                     BEVFORMER_LABEL['pedestrian']]
    np.testing.assert_allclose(gt.bboxes_3d.tensor[:, :3].numpy(),
                               [[10.0, 2.0, 0.0], [-5.0, 8.0, -0.5], [3.0, -20.0, -0.1]], atol=1e-6)
    np.testing.assert_allclose(gt.bboxes_3d.tensor[:, 7:].numpy(), [[1.0, -0.5], [1.0, -0.5], [0.0, 0.0]])


def test_preprocessor_normalises_and_pads_the_queue(data_root):
    """Det3DDataPreprocessor of the tiny model on a batch of two packed queues: [B, T*N, 3, Hp, Wp], BGR -> RGB,
    (x - mean) / std, zero padding to a multiple of 32, batch_input_shape in the metainfo."""
    init_default_scope('mmdet3d')
    cfg = Config.fromfile(osp.join(ROOT, 'configs/bevformer/bevformer_tiny.py'))
    pre = MODELS.build(cfg.model.data_preprocessor)
    ds = build(data_root)
    batch = pseudo_collate([ds[4], ds[6]])
    out = pre(batch, training=True)
    imgs = out['inputs']['imgs']
    assert imgs.shape == (2, 18, 3, 32, 64)
    mean, std = np.array(cfg.model.data_preprocessor.mean), np.array(cfg.model.data_preprocessor.std)
    for b, sample in enumerate(batch['data_samples']):
        ids = [q['frame_idx'] + (5 if sample.scene_token == 'scene-B' else 0) for q in sample.queue_metas]
        ids.append(4 if b == 0 else 6)
        for t, f in enumerate(ids):
            for c in range(6):
                v = frame_value(f, c)
                expected = (np.array([v + 2, v + 1, v]) - mean) / std  # R, G, B
                np.testing.assert_allclose(imgs[b, 6 * t + c, :, 5, 7].numpy(), expected, rtol=1e-5)
    assert torch.all(imgs[..., :, 48:] == 0)  # padded columns (48 -> 64)
    for sample in out['data_samples']:
        assert sample.batch_input_shape == (32, 64) and sample.pad_shape == (32, 64)


def test_nano_model_trains_on_a_packed_batch(data_root):
    """The packed batch drives the nano BEVFormer's loss (interface end to end): finite losses and gradients."""
    init_default_scope('mmdet3d')
    cfg = Config.fromfile(osp.join(ROOT, 'configs/bevformer/bevformer_nano_synth.py'))
    torch.manual_seed(0)
    model = MODELS.build(cfg.model)
    model.train()
    ds = build(data_root)
    data = model.data_preprocessor(pseudo_collate([ds[6]]), training=True)
    losses = model(**data, mode='loss')
    total = sum(v for k, v in losses.items() if 'loss' in k)
    assert torch.isfinite(total)
    total.backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


# ---------------------------------------------------------------- refusals
def test_refuses_infos_without_bevformer_fields(tmp_path):
    make_infos(str(tmp_path), drop_field='can_bus')
    with pytest.raises(ValueError, match=r'has no can_bus: not a BEVFormer info file; make one with '
                                         r'tools/create_data.py'):
        build(str(tmp_path))


def test_refuses_duplicated_frames(tmp_path):
    path = make_infos(str(tmp_path))
    with open(path, 'rb') as fh:
        data = pickle.load(fh)
    data['data_list'][1]['frame_idx'] = data['data_list'][0]['frame_idx']  # two scene-A frames with one index
    with open(path, 'wb') as fh:
        pickle.dump(data, fh)
    with pytest.raises(ValueError, match='two samples with frame_idx'):
        build(str(tmp_path))


# ---------------------------------------------------------------- test-time sampler
@pytest.mark.parametrize('n, world, lengths', [(10, 1, [10]), (10, 3, [3, 3, 4]), (7, 4, [1, 2, 2, 2]),
                                               (3, 4, [0, 1, 1, 1])])
def test_contiguous_sampler_splits_without_padding(n, world, lengths):
    from itertools import chain, zip_longest

    from projects.bevformer.bevformer.datasets import ContiguousSampler
    parts = [list(ContiguousSampler(range(n), rank=r, world_size=world)) for r in range(world)]
    for part in parts:
        assert not part or part == list(range(part[0], part[0] + len(part)))  # consecutive frames
    assert sorted(chain(*parts)) == list(range(n))  # every sample once, none padded
    # mmengine's collect_results: zip_longest of the parts, Nones dropped, then [:n] -> nothing is lost
    collected = [i for i in chain.from_iterable(zip_longest(*parts)) if i is not None][:n]
    assert sorted(collected) == list(range(n))
    assert [len(p) for p in parts] == lengths


def bevformer_order(pipeline):
    """The train pipeline in BEVFormer's order: load float32, distort at full resolution, ..., scale last."""
    steps = {s['type']: s for s in pipeline}
    return [dict(steps['LoadMultiViewImageFromFiles'], to_float32=True), steps['MultiViewWrapper'],
            *[s for s in pipeline if s['type'] not in ('LoadMultiViewImageFromFiles', 'MultiViewWrapper',
                                                       'ScaleMultiViewImage', 'Pack3DDetInputs')],
            dict(steps['ScaleMultiViewImage'], to_float32=False), steps['Pack3DDetInputs']]


def test_at_scale_one_scaling_first_gives_bevformers_order_bit_for_bit(data_root):
    """The train pipeline scales (uint8) before the photometric distortion. At scale 1.0 (every synthetic config:
    the quick start and the GPU study) that gives the tensors of BEVFormer's order bit for bit with the same random
    draws (test_data_transforms.py checks scale 0.5 on a textured image)."""
    scale = 1.0

    def sample(ordered):
        cfg = config_dataset(data_root, 'train', photometric=True)
        pipeline = [dict(s, scale=scale) if s['type'] == 'ScaleMultiViewImage' else s for s in cfg.pipeline]
        cfg.pipeline = bevformer_order(pipeline) if ordered else pipeline
        init_default_scope('mmdet3d')
        ds = DATASETS.build(cfg)
        random.seed(3)
        np.random.seed(3)
        return ds[3]['inputs']['img']
    ours, theirs = sample(False), sample(True)
    assert ours.dtype == theirs.dtype == torch.float32 and torch.equal(ours, theirs)
