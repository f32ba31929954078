"""The whole data set: scene list from the devkit's splits, static tables, maps, scenes in worker processes, and
an atomic move of the finished folder to ``out`` (never a half-written data set)."""
import ast
import datetime
import importlib.util
import json
import math
import multiprocessing
import os
import shutil
import tempfile
from dataclasses import dataclass, replace
from typing import Dict, List, Optional

import cv2

from .catalog import attribute_records, category_records, visibility_records
from .city import LOCATIONS, City, stable_seed
from .rig import CAMERA_NAMES, LIDAR_NAME
from .scene import SceneSpec, attribute_token, category_token, generate_scene, make_token, sensor_token

VERSIONS = ('v1.0-mini', 'v1.0-trainval')
TABLES = ('category', 'attribute', 'visibility', 'instance', 'sensor', 'calibrated_sensor', 'ego_pose', 'log',
          'scene', 'sample', 'sample_data', 'sample_annotation', 'map')
BASE_TIMESTAMP_US = 1531800000000000  # 2018-07-17, when nuScenes was recorded
_TZ = {'boston-seaport': ('n008', '-04:00', -4), 'singapore-onenorth': ('n015', '+08:00', 8),
       'singapore-queenstown': ('n015', '+08:00', 8), 'singapore-hollandvillage': ('n015', '+08:00', 8)}


class SynthConfigError(ValueError):
    """A bad generator setting; the message names the option and what to do."""


@dataclass(frozen=True)
class DatasetConfig:
    """Generator settings (see tools/create_synthetic_nuscenes.py for the command line)."""
    out: str
    version: str = 'v1.0-mini'
    train_scenes: Optional[int] = None  # first K scenes of the version's train split (mini: all 8 by default)
    val_scenes: Optional[int] = None  # first M scenes of its val split (mini: both by default)
    samples_per_scene: int = 30
    scale: float = 0.25
    sweeps: int = 1  # non-key lidar sweeps between keyframes (nuScenes: 9)
    lidar_azimuths: int = 720
    seed: int = 0
    workers: int = 2
    overwrite: bool = False


def devkit_splits() -> Dict[str, List[str]]:
    """The scene-name lists of the installed devkit's ``nuscenes/utils/splits.py`` (train, val, mini_train,
    mini_val), read from its source so the heavy ``nuscenes`` package (sklearn, scipy...) is not imported."""
    spec = importlib.util.find_spec('nuscenes')
    if spec is None or not spec.origin:
        raise SynthConfigError('nuscenes-devkit is not installed; install nuscenes-devkit==1.2.0')
    path = os.path.join(os.path.dirname(spec.origin), 'utils', 'splits.py')
    with open(path) as f:
        tree = ast.parse(f.read())
    lists = {}
    for node in tree.body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
            try:
                value = ast.literal_eval(node.value)
            except ValueError:
                continue
            if isinstance(value, list):
                lists[node.targets[0].id] = value
    lists['train'] = sorted(set(lists['train_detect'] + lists['train_track']))  # as splits.py defines it
    return lists


def split_scene_names(version: str, train: Optional[int], val: Optional[int]) -> List[str]:
    """Scene names: the first ``train`` of the version's train split then the first ``val`` of its val split."""
    lists = devkit_splits()
    tr, va = (lists['mini_train'], lists['mini_val']) if version == 'v1.0-mini' else (lists['train'], lists['val'])
    train = len(tr) if train is None else train
    val = len(va) if val is None else val
    return list(tr[:train]) + list(va[:val])


def validate(cfg: DatasetConfig) -> DatasetConfig:
    """Check every setting; returns the config with defaults filled. Raises SynthConfigError (one line)."""
    if cfg.version not in VERSIONS:
        raise SynthConfigError(f'--version: unknown version {cfg.version!r}; use one of {", ".join(VERSIONS)}')
    limits = {'v1.0-mini': (8, 2), 'v1.0-trainval': (700, 150)}[cfg.version]
    if cfg.version == 'v1.0-trainval' and (cfg.train_scenes is None or cfg.val_scenes is None):
        raise SynthConfigError('--train-scenes and --val-scenes are required for v1.0-trainval '
                               '(the first K/M scene names of the devkit train/val splits, e.g. 20 and 5)')
    train = limits[0] if cfg.train_scenes is None else cfg.train_scenes
    val = limits[1] if cfg.val_scenes is None else cfg.val_scenes
    if not 0 <= train <= limits[0]:
        raise SynthConfigError(f'--train-scenes must be in [0, {limits[0]}] for {cfg.version}, got {train}')
    if not 0 <= val <= limits[1]:
        raise SynthConfigError(f'--val-scenes must be in [0, {limits[1]}] for {cfg.version}, got {val}')
    if train + val < 1:
        raise SynthConfigError('--train-scenes + --val-scenes must be at least 1')
    if not (isinstance(cfg.scale, (int, float)) and math.isfinite(cfg.scale) and 0.05 <= cfg.scale <= 1.0):
        raise SynthConfigError(f'--scale must be in [0.05, 1.0] (images are scale x 1600x900), got {cfg.scale}')
    if not 2 <= cfg.samples_per_scene <= 100:
        raise SynthConfigError(f'--samples-per-scene must be in [2, 100], got {cfg.samples_per_scene}')
    if not 0 <= cfg.sweeps <= 9:
        raise SynthConfigError(f'--sweeps must be in [0, 9] (nuScenes has 9 at 20 Hz), got {cfg.sweeps}')
    if not 64 <= cfg.lidar_azimuths <= 4096:
        raise SynthConfigError(f'--lidar-azimuths must be in [64, 4096], got {cfg.lidar_azimuths}')
    if cfg.workers < 1:
        raise SynthConfigError(f'--workers must be >= 1, got {cfg.workers}')
    out = os.path.abspath(cfg.out)
    if os.path.exists(out) and not os.path.isdir(out):
        raise SynthConfigError(f'--out {cfg.out} exists and is not a folder; choose another path')
    if os.path.exists(out) and not cfg.overwrite:
        raise SynthConfigError(f'--out {cfg.out} already exists; pass --overwrite to replace it or choose another path')
    parent = os.path.dirname(out)
    probe = parent
    while not os.path.exists(probe):
        probe = os.path.dirname(probe)
    if not os.path.isdir(probe) or not os.access(probe, os.W_OK | os.X_OK):
        raise SynthConfigError(f'--out {cfg.out}: cannot write under {probe}; choose a writable location')
    return replace(cfg, out=out, train_scenes=train, val_scenes=val)


def _scene_specs(cfg: DatasetConfig, root: str) -> List[SceneSpec]:
    specs = []
    names = split_scene_names(cfg.version, cfg.train_scenes, cfg.val_scenes)
    locations = sorted(LOCATIONS)
    for name in names:
        number = int(name[-4:])
        location = locations[stable_seed('location', name) % len(locations)]
        start_us = BASE_TIMESTAMP_US + number * 3_600_000_000
        vehicle, tz, hours = _TZ[location]
        local = datetime.datetime.fromtimestamp(start_us / 1e6, datetime.timezone.utc) + datetime.timedelta(hours=hours)
        logfile = f'{vehicle}-{local:%Y-%m-%d-%H-%M-%S}{tz.replace(":", "")}'
        specs.append(SceneSpec(name=name, location=location, logfile=logfile,
                               log_token=make_token(cfg.seed, 'log', name), start_us=start_us,
                               n_samples=cfg.samples_per_scene, sweeps=cfg.sweeps, scale=cfg.scale,
                               n_azimuth=cfg.lidar_azimuths, seed=cfg.seed, root=root))
    return specs


def _static_tables(specs: List[SceneSpec], root: str) -> Dict[str, List[dict]]:
    """category, attribute, visibility, sensor, log and map tables (and the map pngs)."""
    logs, maps = [], []
    for s in specs:
        local_date = s.logfile.split('-', 1)[1][:10]
        logs.append(dict(token=s.log_token, logfile=s.logfile, vehicle=s.logfile[:4], date_captured=local_date,
                         location=s.location))
    for location in sorted({s.location for s in specs}):
        token = make_token('map', location)
        filename = f'maps/{token}.png'
        cv2.imwrite(os.path.join(root, filename), City(location).map_mask(), [cv2.IMWRITE_PNG_COMPRESSION, 1])
        maps.append(dict(category='semantic_prior', token=token, filename=filename,
                         log_tokens=[s.log_token for s in specs if s.location == location]))
    sensors = [dict(token=sensor_token(ch), channel=ch, modality='camera') for ch in CAMERA_NAMES]
    sensors.append(dict(token=sensor_token(LIDAR_NAME), channel=LIDAR_NAME, modality='lidar'))
    return dict(category=category_records(category_token), attribute=attribute_records(attribute_token),
                visibility=visibility_records(), sensor=sensors, log=logs, map=maps)


def _worker_init() -> None:
    cv2.setNumThreads(1)


def generate_dataset(cfg: DatasetConfig, progress: bool = True) -> str:
    """Generate the data set described by ``cfg``; returns the absolute output folder."""
    cfg = validate(cfg)
    parent = os.path.dirname(cfg.out)
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=f'.{os.path.basename(cfg.out)}.tmp-', dir=parent)
    try:
        folders = [f'samples/{ch}' for ch in CAMERA_NAMES + (LIDAR_NAME,)]
        for sub in folders + [f'sweeps/{LIDAR_NAME}', 'maps', 'can_bus', cfg.version]:
            os.makedirs(os.path.join(tmp, sub), exist_ok=True)
        specs = _scene_specs(cfg, tmp)
        tables = _static_tables(specs, tmp)
        for name in TABLES:
            tables.setdefault(name, [])
        for records in _run_scenes(specs, cfg.workers, progress):
            for name, recs in records.items():
                tables[name].extend(recs)
        for name in TABLES:
            with open(os.path.join(tmp, cfg.version, f'{name}.json'), 'w') as f:
                json.dump(tables[name], f, indent=0)
        _replace_folder(tmp, cfg.out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return cfg.out


def _run_scenes(specs: List[SceneSpec], workers: int, progress: bool):
    from tqdm import tqdm
    bar = tqdm(total=len(specs), unit='scene', desc='synthetic nuScenes', disable=not progress)
    try:
        if workers == 1 or len(specs) == 1:
            _worker_init()
            for spec in specs:
                yield generate_scene(spec)
                bar.update(1)
        else:
            ctx = multiprocessing.get_context('spawn')
            with ctx.Pool(min(workers, len(specs)), initializer=_worker_init) as pool:
                for records in pool.imap(generate_scene, specs):
                    yield records
                    bar.update(1)
    finally:
        bar.close()


def _replace_folder(tmp: str, out: str) -> None:
    """Move the finished ``tmp`` folder to ``out``, replacing an old ``out`` only once the new one is complete."""
    old = None
    if os.path.exists(out):
        old = tempfile.mkdtemp(prefix=f'.{os.path.basename(out)}.old-', dir=os.path.dirname(out))
        os.rename(out, os.path.join(old, 'data'))
    os.rename(tmp, out)
    if old:
        shutil.rmtree(old, ignore_errors=True)
