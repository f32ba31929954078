"""The generated set, read back only through the nuscenes-devkit (independent of the generator's own code)."""
import hashlib
import json
import os

import cv2
import numpy as np
import pytest
from pyquaternion import Quaternion

CAMERAS = ('CAM_FRONT', 'CAM_FRONT_RIGHT', 'CAM_FRONT_LEFT', 'CAM_BACK', 'CAM_BACK_LEFT', 'CAM_BACK_RIGHT')


def test_devkit_loads_scenes_from_the_stock_splits(nusc):
    from nuscenes.utils import splits
    assert [s['name'] for s in nusc.scene] == [splits.train[0], splits.val[0]]
    assert len(nusc.sample) == 8 and all(s['nbr_samples'] == 4 for s in nusc.scene)
    # 6 cameras + LIDAR_TOP per keyframe, plus 1 lidar sweep between consecutive keyframes (3 per scene).
    assert len(nusc.sample_data) == 8 * 7 + 2 * 3
    assert len(nusc.ego_pose) == len(nusc.sample_data)
    assert len(nusc.calibrated_sensor) == 2 * 7 and len(nusc.sensor) == 7
    for s in nusc.sample:
        assert set(s['data']) == set(CAMERAS) | {'LIDAR_TOP'}
    sweeps = [sd for sd in nusc.sample_data if not sd['is_key_frame']]
    assert len(sweeps) == 6 and all(sd['filename'].startswith('sweeps/LIDAR_TOP/') for sd in sweeps)
    for sd in nusc.sample_data:
        assert os.path.isfile(os.path.join(nusc.dataroot, sd['filename']))
    cam = nusc.get('sample_data', nusc.sample[0]['data']['CAM_FRONT'])
    img = cv2.imread(os.path.join(nusc.dataroot, cam['filename']))
    assert img.shape == (90, 160, 3) == (cam['height'], cam['width'], 3)
    k = np.array(nusc.get('calibrated_sensor', cam['calibrated_sensor_token'])['camera_intrinsic'])
    assert k[0, 0] == pytest.approx(1266.4 * 0.1, rel=1e-9) and k[1, 2] == pytest.approx(49.15, rel=1e-9)
    lidar_cs = nusc.get('calibrated_sensor', nusc.get('sample_data', nusc.sample[0]['data']['LIDAR_TOP'])[
        'calibrated_sensor_token'])
    # LIDAR_TOP is yawed -90 deg: its x axis is the ego's right (-y), within the per-log calibration jitter.
    x_axis = Quaternion(lidar_cs['rotation']).rotate([1.0, 0.0, 0.0])
    assert x_axis[1] < -0.99


def test_lidar_sweeps_are_chained_between_keyframes(nusc):
    scene = nusc.scene[0]
    sd = nusc.get('sample_data', nusc.get('sample', scene['first_sample_token'])['data']['LIDAR_TOP'])
    stamps, keys = [], []
    while True:
        stamps.append(sd['timestamp'])
        keys.append(sd['is_key_frame'])
        if not sd['next']:
            break
        sd = nusc.get('sample_data', sd['next'])
    assert keys == [True, False, True, False, True, False, True]
    assert np.all(np.diff(stamps) == 250_000)  # 2 Hz keyframes, one sweep half-way


def test_detection_loader_sees_all_ten_classes_and_splits(nusc):
    from nuscenes.eval.common.loaders import load_gt
    from nuscenes.eval.detection.data_classes import DetectionBox
    train = load_gt(nusc, 'train', DetectionBox)
    val = load_gt(nusc, 'val', DetectionBox)
    assert len(train.sample_tokens) == 4 and len(val.sample_tokens) == 4
    names = {b.detection_name for boxes in (train, val) for t in boxes.sample_tokens for b in boxes[t]}
    assert names == {'car', 'truck', 'trailer', 'bus', 'construction_vehicle', 'bicycle', 'motorcycle',
                     'pedestrian', 'traffic_cone', 'barrier'}


def _mmdet3d_attribute(name: str, speed: float) -> str:
    """NuScenesMetric's rule for predicted attributes, written out from mmdet3d 1.4's nuscenes_metric.py."""
    default = {'car': 'vehicle.parked', 'pedestrian': 'pedestrian.moving', 'trailer': 'vehicle.parked',
               'truck': 'vehicle.parked', 'bus': 'vehicle.moving', 'motorcycle': 'cycle.without_rider',
               'construction_vehicle': 'vehicle.parked', 'bicycle': 'cycle.without_rider', 'barrier': '',
               'traffic_cone': ''}
    if speed > 0.2:
        if name in ['car', 'construction_vehicle', 'bus', 'truck', 'trailer']:
            return 'vehicle.moving'
        if name in ['bicycle', 'motorcycle']:
            return 'cycle.with_rider'
        return default[name]
    if name == 'pedestrian':
        return 'pedestrian.standing'
    if name == 'bus':
        return 'vehicle.stopped'
    return default[name]


def test_velocities_and_attributes_follow_the_mmdet3d_rule(nusc):
    from nuscenes.eval.detection.utils import category_to_detection_name
    moving = still = 0
    for ann in nusc.sample_annotation:
        v = nusc.box_velocity(ann['token'])
        assert np.all(np.isfinite(v)), 'every instance has >= 2 annotations 0.5 s apart'
        speed = float(np.hypot(v[0], v[1]))
        if speed > 0:
            assert speed >= 1.0
            moving += 1
        else:
            still += 1
        name = category_to_detection_name(ann['category_name'])
        attrs = [nusc.get('attribute', t)['name'] for t in ann['attribute_tokens']]
        assert attrs == ([_mmdet3d_attribute(name, speed)] if _mmdet3d_attribute(name, speed) else [])
        assert ann['num_radar_pts'] == 0 and ann['visibility_token'] in {'1', '2', '3', '4'}
    assert moving > 10 and still > 10


def test_instances_are_linked_chains_over_consecutive_samples(nusc):
    for inst in nusc.instance:
        ann = nusc.get('sample_annotation', inst['first_annotation_token'])
        chain = [ann]
        while ann['next']:
            nxt = nusc.get('sample_annotation', ann['next'])
            assert nxt['prev'] == ann['token'] and nxt['instance_token'] == inst['token']
            assert nusc.get('sample', ann['sample_token'])['next'] == nxt['sample_token']
            ann = nxt
            chain.append(ann)
        assert len(chain) == inst['nbr_annotations'] >= 2
        assert chain[-1]['token'] == inst['last_annotation_token']
        sizes = {tuple(a['size']) for a in chain}
        assert len(sizes) == 1
        w, l, h = chain[0]['size']
        assert abs(chain[0]['translation'][2] - h / 2) < 1e-9  # boxes stand on the ground (ego z = 0)


def test_lidar_points_counted_inside_boxes(nusc):
    from nuscenes.utils.geometry_utils import points_in_box
    checked = exact = 0
    for sample in nusc.sample:
        path, boxes, _ = nusc.get_sample_data(sample['data']['LIDAR_TOP'])
        pts = np.fromfile(path, dtype=np.float32).reshape(-1, 5)
        assert set(np.unique(pts[:, 4]).astype(int)) <= set(range(32))
        assert np.linalg.norm(pts[:, :2], axis=1).max() <= 70.1
        for box in boxes:
            n = int(points_in_box(box, pts[:, :3].T.astype(np.float64)).sum())
            ann = nusc.get('sample_annotation', box.token)
            checked += 1
            exact += n == ann['num_lidar_pts']
            assert abs(n - ann['num_lidar_pts']) <= 2
            if np.linalg.norm(box.center[:2]) < 15 and ann['visibility_token'] == '4':
                assert n > 0
    assert checked > 100 and exact >= 0.95 * checked


def _hull_contains(corners_uv: np.ndarray, p) -> bool:
    hull = cv2.convexHull(corners_uv.astype(np.float32))
    return cv2.pointPolygonTest(hull, (float(p[0]), float(p[1])), False) >= 0


def test_projected_centre_lands_on_the_class_colour(nusc):
    """Unoccluded nearby boxes: the pixel at the projected box centre has the chromaticity of the class's parts."""
    from nuscenes.eval.detection.utils import category_to_detection_name
    from nuscenes.utils.geometry_utils import view_points
    from qdbev.synth.catalog import OBJECT_CLASSES, PALETTE
    tried = matched = 0
    for sample in nusc.sample:
        for ch in CAMERAS:
            path, boxes, k = nusc.get_sample_data(sample['data'][ch])
            img = cv2.cvtColor(cv2.imread(path), cv2.COLOR_BGR2RGB).astype(np.float64)
            h, w = img.shape[:2]
            boxes = sorted(boxes, key=lambda b: b.center[2])
            for i, box in enumerate(boxes):
                ann = nusc.get('sample_annotation', box.token)
                uv = view_points(box.center[:, None], k, normalize=True)[:2, 0]
                corners = view_points(box.corners(), k, normalize=True)[:2].T
                size = corners.max(0) - corners.min(0)
                if not (4 < box.center[2] < 25 and 3 <= uv[0] < w - 3 and 3 <= uv[1] < h - 3 and size.min() > 6
                        and ann['visibility_token'] == '4' and np.all(box.corners()[2] > 0.5)):
                    continue
                if any(_hull_contains(view_points(o.corners(), k, normalize=True)[:2].T, uv)
                       for o in boxes[:i] if np.all(o.corners()[2] > 0.5)):
                    continue  # a nearer box covers the centre
                name = category_to_detection_name(ann['category_name'])
                cls = OBJECT_CLASSES[name]
                own = [cls.colors.get(p.color, PALETTE.get(p.color)) for p in cls.parts + cls.moving_parts
                       if p.color not in ('tyre', 'glass', 'dark')]
                px = np.median(img[int(round(uv[1])) - 1:int(round(uv[1])) + 2,
                                   int(round(uv[0])) - 1:int(round(uv[0])) + 2].reshape(-1, 3), axis=0)
                chroma = px / max(px.sum(), 1.0)
                dist = min(np.abs(chroma - np.array(c) / sum(c)).sum() for c in own)
                tried += 1
                matched += dist < 0.08
    assert tried >= 10
    assert matched >= 0.85 * tried, f'{matched}/{tried}'


def test_can_bus_pose_messages_match_ego_poses(nusc):
    from nuscenes.can_bus.can_bus_api import NuScenesCanBus
    can = NuScenesCanBus(dataroot=nusc.dataroot)
    scene = nusc.scene[0]
    msgs = can.get_messages(scene['name'], 'pose')
    assert set(msgs[0]) == {'utime', 'pos', 'orientation', 'vel', 'accel', 'rotation_rate'}
    utimes = np.array([m['utime'] for m in msgs])
    assert np.all(np.diff(utimes) == 50_000)  # 20 Hz
    by_time = {m['utime']: m for m in msgs}
    sample = nusc.get('sample', scene['first_sample_token'])
    while True:
        pose = nusc.get('ego_pose', nusc.get('sample_data', sample['data']['LIDAR_TOP'])['ego_pose_token'])
        m = by_time[sample['timestamp']]
        assert np.allclose(m['pos'], pose['translation'], atol=1e-6)
        assert np.allclose(m['orientation'], pose['rotation'], atol=1e-9)
        # Forward speed agrees with the finite difference of positions 50 ms apart.
        nxt = by_time[sample['timestamp'] + 50_000]
        fd = np.linalg.norm(np.subtract(nxt['pos'], m['pos'])) / 0.05
        assert m['vel'][0] == pytest.approx(fd, rel=0.05, abs=0.05)
        if not sample['next']:
            break
        sample = nusc.get('sample', sample['next'])


def test_ego_drives_on_the_map(nusc):
    for log in nusc.log:
        mask = nusc.get('map', log['map_token'])['mask']
        scenes = {s['token'] for s in nusc.scene if s['log_token'] == log['token']}
        poses = [nusc.get('ego_pose', sd['ego_pose_token']) for sd in nusc.sample_data
                 if nusc.get('sample', sd['sample_token'])['scene_token'] in scenes]
        xy = np.array([p['translation'][:2] for p in poses])
        assert mask.is_on_mask(xy[:, 0], xy[:, 1]).all()
        assert not mask.is_on_mask(xy[:, 0] + 30.0, xy[:, 1] + 30.0).all()


def _digest(root: str) -> dict:
    out = {}
    for dirpath, _, files in os.walk(root):
        for f in files:
            p = os.path.join(dirpath, f)
            with open(p, 'rb') as fh:
                out[os.path.relpath(p, root)] = hashlib.md5(fh.read()).hexdigest()
    return out


def test_same_seed_gives_identical_bytes_across_worker_counts(small_set, small_set_again):
    a, b = _digest(small_set[0]), _digest(small_set_again[0])
    assert len(a) > 70 and a == b
    with open(os.path.join(small_set[0], small_set[1], 'sample_annotation.json')) as f:
        assert len(json.load(f)) > 50
