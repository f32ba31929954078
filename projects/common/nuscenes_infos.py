"""nuScenes info files for BEVFormer/QD-BEV, built on mmdet3d's own nuScenes converter.

mmdet3d's converter (shipped in its wheel under ``mmdet3d/.mim/tools/dataset_converters``) makes the v1 infos and
updates them to the mmdet3d 1.x (v2) format. BEVFormer needs a few more fields per sample, added here:
``scene_token``, ``prev``/``next`` sample tokens, ``frame_idx`` (index in its scene), ``can_bus`` (18 floats) and per
camera ``lidar2img``. The list is sorted by scene and time and ``sample_idx`` is the position in it, as mmdet3d's
``NuScenesMetric`` indexes the info list by ``sample_idx``.

``can_bus`` follows BEVFormer: the last CAN-bus ``pose`` message before the sample (accel, rotation_rate, vel; from
the nuScenes CAN bus expansion when ``<dataroot>/can_bus`` exists, otherwise derived from the ego poses by finite
differences), then [0:3] and [3:7] overwritten with the ego2global translation and rotation (w, x, y, z), [16] the ego
yaw in radians in [0, 2*pi) and [17] the same in degrees.
"""
import contextlib
import importlib.util
import io
import multiprocessing
import os
import os.path as osp
import pickle
import tempfile
from contextlib import contextmanager
from typing import Dict, List, Optional, Sequence

import numpy as np
from pyquaternion import Quaternion

from .checkpoint import atomic_write_bytes

CAMERAS = ('CAM_FRONT', 'CAM_FRONT_RIGHT', 'CAM_FRONT_LEFT', 'CAM_BACK', 'CAM_BACK_LEFT', 'CAM_BACK_RIGHT')
VERSIONS = ('v1.0-mini', 'v1.0-trainval', 'v1.0-test')
INFO_FORMAT = 'qdbev-bevformer-1'  # stored in metainfo; datasets refuse infos without it


class InfoError(ValueError):
    """Bad input for info creation: the message names the file/field and what to do."""


def _converter_module(name: str):
    """Import one of mmdet3d's dataset converters from the files its wheel ships (``.mim/tools``)."""
    import mmdet3d
    path = osp.join(osp.dirname(mmdet3d.__file__), '.mim', 'tools', 'dataset_converters', f'{name}.py')
    if not osp.isfile(path):
        raise InfoError(f'{path}: mmdet3d converter not found; reinstall mmdet3d==1.4.0 (tools/setup.sh)')
    spec = importlib.util.spec_from_file_location(f'mmdet3d_converters_{name}', path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def check_dataroot(dataroot: str, version: str) -> None:
    """One-line errors for the usual mistakes before anything is loaded."""
    if version not in VERSIONS:
        raise InfoError(f'--version {version!r}: unknown nuScenes version; use one of {", ".join(VERSIONS)}')
    if not osp.isdir(dataroot):
        raise InfoError(f'{dataroot}: data root does not exist; generate one with tools/create_synthetic_nuscenes.py '
                        f'or point --root-path at a nuScenes folder')
    table_dir = osp.join(dataroot, version)
    if not osp.isdir(table_dir):
        found = [v for v in VERSIONS if osp.isdir(osp.join(dataroot, v))]
        raise InfoError(f'{table_dir}: no {version} tables in this data root'
                        + (f'; it holds {", ".join(found)}: pass --version {found[0]}' if found else ''))


def _missing_files(nusc) -> List[str]:
    """Files the infos refer to (key-frame camera images and lidar, and the lidar sweeps) absent on disk."""
    missing = []
    for sd in nusc.sample_data:
        needed = sd['is_key_frame'] or sd['channel'] == 'LIDAR_TOP'
        if needed and not osp.isfile(osp.join(nusc.dataroot, sd['filename'])):
            missing.append(sd['filename'])
    return missing


def _check_sample_cameras(nusc) -> None:
    for sample in nusc.sample:
        absent = [c for c in CAMERAS if c not in sample['data']]
        if absent:
            raise InfoError(f'sample {sample["token"]}: camera(s) {", ".join(absent)} missing; BEVFormer needs all six '
                            f'cameras per sample, fix or drop this sample from the tables')


def _check_calibration(nusc) -> None:
    """Refuse non-finite or degenerate sensor extrinsics/intrinsics (``calibrated_sensor.json``) and ego poses."""
    for cs in nusc.calibrated_sensor:
        where = f'{nusc.version}/calibrated_sensor.json: record {cs["token"]}'
        values = np.asarray(list(cs['translation']) + list(cs['rotation']), dtype=np.float64)
        if values.shape != (7, ) or not np.isfinite(values).all():
            raise InfoError(f'{where} has a non-finite or malformed translation/rotation {values.tolist()}; '
                            f'fix the calibration (translation: 3 metres, rotation: w, x, y, z quaternion)')
        if np.linalg.norm(values[3:]) < 1e-6:
            raise InfoError(f'{where} has a zero rotation quaternion (a singular extrinsic); fix the calibration')
        k = np.asarray(cs.get('camera_intrinsic') or np.eye(3), dtype=np.float64)
        if k.shape != (3, 3) or not np.isfinite(k).all() or abs(np.linalg.det(k)) < 1e-9:
            raise InfoError(f'{where} has a non-finite or singular camera_intrinsic {k.tolist()}; fix the calibration')
    for pose in nusc.ego_pose:
        values = np.asarray(list(pose['translation']) + list(pose['rotation']), dtype=np.float64)
        if not np.isfinite(values).all() or np.linalg.norm(values[3:]) < 1e-6:
            raise InfoError(f'{nusc.version}/ego_pose.json: record {pose["token"]} has a non-finite pose or zero '
                            f'rotation {values.tolist()}; fix the ego poses')


def _check_camera_images(nusc) -> None:
    """Each key-frame camera JPEG must be complete (ends with the JPEG end marker), have the size recorded in
    ``sample_data.json`` and a principal point (from the intrinsics) near the image centre."""
    from PIL import Image
    for sd in nusc.sample_data:
        if not sd['is_key_frame'] or not sd['channel'].startswith('CAM'):
            continue
        path = osp.join(nusc.dataroot, sd['filename'])
        try:
            with Image.open(path) as img:
                width, height = img.size
            with open(path, 'rb') as f:
                f.seek(-2, os.SEEK_END)
                complete = f.read(2) == b'\xff\xd9'
        except (OSError, SyntaxError) as err:
            raise InfoError(f'{path}: not a readable image ({type(err).__name__}); restore the file or regenerate the '
                            f'data set') from None
        if not complete:
            raise InfoError(f'{path}: truncated JPEG (no end-of-image marker); restore the file or regenerate the '
                            f'data set')
        if (width, height) != (sd['width'], sd['height']):
            raise InfoError(f'{path}: image is {width}x{height} but {nusc.version}/sample_data.json says '
                            f'{sd["width"]}x{sd["height"]}; resized images need matching tables and intrinsics')
        k = np.asarray(nusc.get('calibrated_sensor', sd['calibrated_sensor_token'])['camera_intrinsic'])
        cx, cy = float(k[0, 2]), float(k[1, 2])
        if not (0.25 * width < cx < 0.75 * width and 0.25 * height < cy < 0.75 * height):
            raise InfoError(f'{path}: the intrinsics (principal point {cx:.1f}, {cy:.1f}) do not fit a '
                            f'{width}x{height} image; the image was resized or the camera_intrinsic belongs to '
                            f'another camera: scale camera_intrinsic with the image')


@contextmanager
def _chdir(path: str):
    old = os.getcwd()
    os.chdir(path)
    try:
        yield
    finally:
        os.chdir(old)


def yaw_of(rotation: Sequence[float]) -> float:
    """Yaw (rad) of a w, x, y, z quaternion, as BEVFormer's ``quaternion_yaw``."""
    q = Quaternion(rotation)
    v = q.rotate(np.array([1.0, 0.0, 0.0]))
    return float(np.arctan2(v[1], v[0]))


def _can_bus_from_expansion(can_bus_api, scene_name: str, timestamp: int) -> Optional[np.ndarray]:
    """BEVFormer's ``_get_can_bus_info``: the last pose message before ``timestamp`` (16 values + 2 zeros)."""
    try:
        poses = can_bus_api.get_messages(scene_name, 'pose')
    except Exception:  # scenes without CAN bus data (blacklisted in the expansion) get zeros, as in BEVFormer
        return None
    if not poses:
        return None
    last = poses[0]
    for pose in poses:
        if pose['utime'] > timestamp:
            break
        last = pose
    out = list(last['pos']) + list(last['orientation']) + list(last['accel']) + list(last['rotation_rate']) \
        + list(last['vel']) + [0.0, 0.0]
    return np.asarray(out, dtype=np.float64)


def _can_bus_from_ego_poses(poses: List[dict], k: int) -> np.ndarray:
    """CAN-bus pose signals derived from the ego poses of one scene: velocity, acceleration and rotation rate by
    finite differences, expressed in the ego frame at pose ``k`` (as the CAN bus reports them)."""
    def t(i):
        return poses[i]['timestamp'] * 1e-6

    def pos(i):
        return np.asarray(poses[i]['translation'], dtype=np.float64)

    def vel(i):
        j0, j1 = max(i - 1, 0), min(i + 1, len(poses) - 1)
        return (pos(j1) - pos(j0)) / (t(j1) - t(j0)) if j1 > j0 else np.zeros(3)

    q = Quaternion(poses[k]['rotation'])
    v_world = vel(k)
    j0, j1 = max(k - 1, 0), min(k + 1, len(poses) - 1)
    if j1 > j0:
        acc_world = (vel(j1) - vel(j0)) / (t(j1) - t(j0))
        dyaw = yaw_of(poses[j1]['rotation']) - yaw_of(poses[j0]['rotation'])
        dyaw = (dyaw + np.pi) % (2 * np.pi) - np.pi
        yaw_rate = dyaw / (t(j1) - t(j0))
    else:
        acc_world, yaw_rate = np.zeros(3), 0.0
    inv = q.inverse
    out = np.zeros(18)
    out[0:3] = pos(k)
    out[3:7] = q.elements
    out[7:10] = inv.rotate(acc_world)
    out[10:13] = [0.0, 0.0, yaw_rate]
    out[13:16] = inv.rotate(v_world)
    return out


def bevformer_fields(nusc, sample_token: str, can_bus_api=None, _scene_cache: Optional[dict] = None) -> dict:
    """The extra per-sample fields BEVFormer needs (see module docstring)."""
    sample = nusc.get('sample', sample_token)
    scene = nusc.get('scene', sample['scene_token'])
    lidar_sd = nusc.get('sample_data', sample['data']['LIDAR_TOP'])
    ego = nusc.get('ego_pose', lidar_sd['ego_pose_token'])
    cache = _scene_cache if _scene_cache is not None else {}
    if scene['token'] not in cache:
        tokens, poses, tok = [], [], scene['first_sample_token']
        while tok:
            s = nusc.get('sample', tok)
            tokens.append(tok)
            poses.append(nusc.get('ego_pose', nusc.get('sample_data', s['data']['LIDAR_TOP'])['ego_pose_token']))
            tok = s['next']
        cache[scene['token']] = (tokens, poses)
    tokens, poses = cache[scene['token']]
    frame_idx = tokens.index(sample_token)
    can_bus = None
    if can_bus_api is not None:
        can_bus = _can_bus_from_expansion(can_bus_api, scene['name'], sample['timestamp'])
    if can_bus is None:
        can_bus = _can_bus_from_ego_poses(poses, frame_idx)
    can_bus[0:3] = ego['translation']
    can_bus[3:7] = ego['rotation']
    angle = yaw_of(ego['rotation']) % (2 * np.pi)
    can_bus[16] = angle
    can_bus[17] = angle / np.pi * 180.0
    return dict(scene_token=sample['scene_token'], prev=sample['prev'], next=sample['next'], frame_idx=frame_idx,
                can_bus=can_bus.astype(np.float64).tolist())


def lidar2img(image_info: dict) -> List[List[float]]:
    """``cam2img (4x4) @ lidar2cam`` for one camera of a v2 info."""
    cam2img = np.eye(4)
    k = np.asarray(image_info['cam2img'], dtype=np.float64)
    cam2img[:k.shape[0], :k.shape[1]] = k
    return (cam2img @ np.asarray(image_info['lidar2cam'], dtype=np.float64)).tolist()


_FILL_ARGS: tuple = ()  # (converter, nusc, train, val, is_test, max_sweeps, workers) for the forked workers


class _SampleSubset:
    """A NuScenes object whose ``sample`` table (what the converter iterates) is a subset; everything else, including
    the token index that ``get`` uses, is the full object's."""

    def __init__(self, nusc, samples: list):
        self._nusc, self.sample = nusc, samples

    def __getattr__(self, name: str):
        return getattr(self._nusc, name)


def _fill_part(k: int):
    """Worker ``k`` of :func:`fill_infos`: mmdet3d's ``_fill_trainval_infos`` over every ``workers``-th sample, its
    progress bar silenced."""
    conv, nusc, train, val, is_test, max_sweeps, workers = _FILL_ARGS
    with contextlib.redirect_stdout(io.StringIO()):
        return conv._fill_trainval_infos(_SampleSubset(nusc, nusc.sample[k::workers]), train, val, is_test,
                                         max_sweeps=max_sweeps)


def fill_infos(conv, nusc, train: set, val: set, is_test: bool, max_sweeps: int, workers: int = 1):
    """mmdet3d's v1 infos ``(train, val)`` for the scenes in ``train`` / ``val``, each list in scene order and time
    (the same lists for any ``workers``; more than 1 splits the samples over forked processes: the converter asks
    the devkit for every camera's boxes, which makes it the slow part of info creation)."""
    global _FILL_ARGS
    if workers > 1 and 'fork' in multiprocessing.get_all_start_methods():
        _FILL_ARGS = (conv, nusc, train, val, is_test, max_sweeps, workers)
        try:
            with multiprocessing.get_context('fork').Pool(workers) as pool:
                parts = pool.map(_fill_part, range(workers))
        finally:
            _FILL_ARGS = ()
        train_infos = [i for p in parts for i in p[0]]
        val_infos = [i for p in parts for i in p[1]]
    else:
        train_infos, val_infos = conv._fill_trainval_infos(nusc, train, val, is_test, max_sweeps=max_sweeps)
    scene_order = {s['token']: i for i, s in enumerate(nusc.scene)}

    def key(info):
        return scene_order[nusc.get('sample', info['token'])['scene_token']], info['timestamp']
    return sorted(train_infos, key=key), sorted(val_infos, key=key)


def create_infos(dataroot: str, version: str = 'v1.0-mini', out_dir: Optional[str] = None,
                 prefix: str = 'nuscenes', max_sweeps: int = 10, cam_instances: bool = False,
                 workers: int = 1) -> Dict[str, str]:
    """Build ``{out_dir}/{prefix}_infos_{train,val}.pkl`` (``_test`` for v1.0-test). Returns {split: path}.

    Runs mmdet3d's converter (v1 infos, then its v1 -> v2 update) in a scratch folder, adds the BEVFormer fields and
    writes each file atomically. The data root is only read, so a read-only nuScenes copy works with ``out_dir``.
    ``cam_instances`` keeps the converter's per-camera 2D boxes (``cam_instances``, for monocular detectors); BEVFormer
    does not use them and they take two thirds of the conversion time, so they are left empty by default.
    ``workers`` > 1 runs the converter's per-sample part in that many forked processes (same output).
    """
    from nuscenes.nuscenes import NuScenes
    from nuscenes.utils import splits

    dataroot = osp.abspath(dataroot)
    check_dataroot(dataroot, version)
    out_dir = osp.abspath(out_dir or dataroot)
    try:
        os.makedirs(out_dir, exist_ok=True)
        with tempfile.TemporaryFile(dir=out_dir):  # os.access says yes to root even on a read-only mount
            pass
    except OSError as err:
        raise InfoError(f'{out_dir}: not writable ({err.strerror or type(err).__name__}); pass --out-dir with a '
                        f'writable folder') from None
    nusc = NuScenes(version=version, dataroot=dataroot, verbose=False)
    _check_sample_cameras(nusc)
    missing = _missing_files(nusc)
    if missing:
        raise InfoError(f'{osp.join(dataroot, missing[0])}: file referenced by {version}/sample_data.json is missing '
                        f'({len(missing)} missing in all); restore the files or regenerate the data set')
    _check_calibration(nusc)
    _check_camera_images(nusc)
    conv = _converter_module('nuscenes_converter')
    upd = _converter_module('update_infos_to_v2')
    if not cam_instances:  # our private copy of the converter module: mmdet3d itself is untouched
        upd.generate_nuscenes_camera_instances = lambda info, nusc: upd.get_empty_multicamera_instances(list(CAMERAS))

    split_names = {'v1.0-trainval': (splits.train, splits.val), 'v1.0-mini': (splits.mini_train, splits.mini_val),
                   'v1.0-test': (splits.test, [])}[version]
    scenes = {s['name']: s['token'] for s in conv.get_available_scenes(nusc)}
    train = {scenes[n] for n in split_names[0] if n in scenes}
    val = {scenes[n] for n in split_names[1] if n in scenes}
    if version != 'v1.0-test' and not val:
        raise InfoError(f'{dataroot}/{version}/scene.json: no scene of the {version} val split is present; '
                        f'the evaluator needs at least one (scene names come from nuscenes.utils.splits)')
    is_test = version == 'v1.0-test'
    train_infos, val_infos = fill_infos(conv, nusc, train, val, is_test, max_sweeps, workers)
    parts = {'test': train_infos} if is_test else {'train': train_infos, 'val': val_infos}

    can_bus_api = None
    if osp.isdir(osp.join(dataroot, 'can_bus')):
        from nuscenes.can_bus.can_bus_api import NuScenesCanBus
        can_bus_api = NuScenesCanBus(dataroot=dataroot)

    written = {}
    scene_cache: dict = {}
    with tempfile.TemporaryDirectory(dir=out_dir, prefix='.create_data.') as scratch:
        # mmdet3d's v1 -> v2 update reloads NuScenes from ./data/nuscenes: give it that path inside the scratch folder
        os.makedirs(osp.join(scratch, 'data'))
        os.symlink(dataroot, osp.join(scratch, 'data', 'nuscenes'))
        for split, infos in parts.items():
            v1_path = osp.join(scratch, f'{prefix}_infos_{split}.pkl')
            with open(v1_path, 'wb') as f:
                pickle.dump(dict(infos=infos, metadata=dict(version=version)), f)
            v2_dir = osp.join(scratch, 'v2')
            os.makedirs(v2_dir, exist_ok=True)
            with _chdir(scratch):
                upd.update_nuscenes_infos(pkl_path=v1_path, out_dir=v2_dir)
            with open(osp.join(v2_dir, osp.basename(v1_path)), 'rb') as f:
                data = pickle.load(f)
            entries = data['data_list']
            for entry in entries:
                entry.update(bevformer_fields(nusc, entry['token'], can_bus_api, scene_cache))
                for cam in CAMERAS:
                    entry['images'][cam]['lidar2img'] = lidar2img(entry['images'][cam])
            scene_order = {tok: i for i, tok in enumerate(s['token'] for s in nusc.scene)}
            entries.sort(key=lambda e: (scene_order[e['scene_token']], e['frame_idx']))
            for i, entry in enumerate(entries):
                entry['sample_idx'] = i
            data['metainfo']['info_format'] = INFO_FORMAT
            out_path = osp.join(out_dir, f'{prefix}_infos_{split}.pkl')
            atomic_write_bytes(pickle.dumps(data, protocol=pickle.HIGHEST_PROTOCOL), out_path)
            written[split] = out_path
    return written
