"""tools/create_data.py: mmdet3d's converter + the BEVFormer fields, and its one-line refusals."""
import os
import pickle
import subprocess
import sys

import numpy as np
import pytest
from nuscenes.nuscenes import NuScenes
from pyquaternion import Quaternion

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CAMS = ('CAM_FRONT', 'CAM_FRONT_RIGHT', 'CAM_FRONT_LEFT', 'CAM_BACK', 'CAM_BACK_LEFT', 'CAM_BACK_RIGHT')


def _load(path):
    with open(path, 'rb') as f:
        return pickle.load(f)


def test_infos_have_mmdet3d_and_bevformer_fields(synth_set):
    nusc = NuScenes(version=synth_set.version, dataroot=synth_set.root, verbose=False)
    for split in ('train', 'val'):
        data = _load(getattr(synth_set, split))
        assert data['metainfo']['version'] == 'v1.0-trainval'
        assert data['metainfo']['info_format'] == 'qdbev-bevformer-1'
        entries = data['data_list']
        assert len(entries) == 6
        assert [e['sample_idx'] for e in entries] == list(range(6))
        assert [e['frame_idx'] for e in entries] == list(range(6))
        assert entries[0]['prev'] == '' and entries[-1]['next'] == ''
        for a, b in zip(entries, entries[1:]):
            assert a['next'] == b['token'] and b['prev'] == a['token'] and a['scene_token'] == b['scene_token']
        for e in entries:
            sample = nusc.get('sample', e['token'])
            ego = nusc.get('ego_pose', nusc.get('sample_data', sample['data']['LIDAR_TOP'])['ego_pose_token'])
            can_bus = np.asarray(e['can_bus'])
            assert can_bus.shape == (18,)
            np.testing.assert_allclose(can_bus[:3], ego['translation'])
            np.testing.assert_allclose(can_bus[3:7], ego['rotation'])
            yaw = Quaternion(ego['rotation']).yaw_pitch_roll[0] % (2 * np.pi)
            assert can_bus[16] == pytest.approx(yaw) and can_bus[17] == pytest.approx(np.degrees(yaw))
            # lidar2img projects a lidar-frame point exactly as the devkit chain lidar->ego->global->ego->cam does
            for cam in CAMS:
                img = e['images'][cam]
                sd = nusc.get('sample_data', sample['data'][cam])
                cs = nusc.get('calibrated_sensor', sd['calibrated_sensor_token'])
                lidar_cs = nusc.get('calibrated_sensor',
                                    nusc.get('sample_data', sample['data']['LIDAR_TOP'])['calibrated_sensor_token'])
                p_lidar = np.array([3.0, 7.0, -0.5])
                p_ego = Quaternion(lidar_cs['rotation']).rotate(p_lidar) + lidar_cs['translation']
                p_cam = Quaternion(cs['rotation']).inverse.rotate(p_ego - np.asarray(cs['translation']))
                uvw = np.asarray(cs['camera_intrinsic']) @ p_cam
                got = np.asarray(img['lidar2img']) @ np.append(p_lidar, 1.0)
                np.testing.assert_allclose(got[:3], uvw, rtol=1e-5, atol=1e-4)
        assert sum(len(e['instances']) for e in entries) > 0


def test_can_bus_signals_come_from_the_can_bus_expansion(synth_set):
    from nuscenes.can_bus.can_bus_api import NuScenesCanBus
    nusc = NuScenes(version=synth_set.version, dataroot=synth_set.root, verbose=False)
    api = NuScenesCanBus(dataroot=synth_set.root)
    e = _load(synth_set.train)['data_list'][3]
    sample = nusc.get('sample', e['token'])
    poses = api.get_messages(nusc.get('scene', sample['scene_token'])['name'], 'pose')
    last = [p for p in poses if p['utime'] <= sample['timestamp']][-1]
    np.testing.assert_allclose(e['can_bus'][7:10], last['accel'])
    np.testing.assert_allclose(e['can_bus'][10:13], last['rotation_rate'])
    np.testing.assert_allclose(e['can_bus'][13:16], last['vel'])


def _run(*args):
    return subprocess.run([sys.executable, os.path.join(ROOT, 'tools', 'create_data.py'), 'nuscenes', *args],
                          capture_output=True, text=True, cwd=ROOT)


def test_refusals_are_one_line_and_write_nothing(synth_set, tmp_path):
    missing = _run('--root-path', str(tmp_path / 'nope'), '--version', 'v1.0-mini')
    assert missing.returncode == 2 and 'data root does not exist' in missing.stderr
    wrong = _run('--root-path', synth_set.root, '--version', 'v1.0-mini', '--out-dir', str(tmp_path))
    assert wrong.returncode == 2 and 'pass --version v1.0-trainval' in wrong.stderr
    bogus = _run('--root-path', synth_set.root, '--version', 'v2.0', '--out-dir', str(tmp_path))
    assert bogus.returncode == 2 and 'unknown nuScenes version' in bogus.stderr
    for res in (missing, wrong, bogus):
        assert len(res.stderr.strip().splitlines()) == 1
    assert os.listdir(tmp_path) == []


def test_missing_image_is_named(synth_set, tmp_path):
    import shutil
    root = tmp_path / 'broken'
    shutil.copytree(synth_set.root, root, ignore=shutil.ignore_patterns('*.pkl'))
    victim = sorted((root / 'samples' / 'CAM_BACK').iterdir())[2]
    victim.unlink()
    res = _run('--root-path', str(root), '--version', synth_set.version)
    assert res.returncode == 2
    assert victim.name in res.stderr and 'missing' in res.stderr
    assert not list(root.glob('*.pkl'))


def _same(a, b, path='infos'):
    """Recursive equality of two loaded info files (numpy arrays compared by value), naming the first difference."""
    assert type(a) is type(b), f'{path}: {type(a)} vs {type(b)}'
    if isinstance(a, dict):
        assert a.keys() == b.keys(), f'{path}: keys {set(a) ^ set(b)}'
        for k in a:
            _same(a[k], b[k], f'{path}/{k}')
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), f'{path}: length {len(a)} vs {len(b)}'
        for i, (x, y) in enumerate(zip(a, b)):
            _same(x, y, f'{path}[{i}]')
    elif isinstance(a, np.ndarray):
        assert np.array_equal(a, b), path
    else:
        assert a == b, f'{path}: {a!r} vs {b!r}'


def test_workers_split_the_conversion_and_write_the_same_infos(synth_set, tmp_path):
    from projects.common.nuscenes_infos import create_infos
    written = create_infos(synth_set.root, synth_set.version, out_dir=str(tmp_path), workers=3)
    for split in ('train', 'val'):
        _same(_load(getattr(synth_set, split)), _load(written[split]))
