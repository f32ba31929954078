"""One scene end to end: drive, actors, camera images, lidar sweeps, CAN bus, and its nuScenes table records.

``generate_scene(spec)`` writes the scene's files under ``spec.root`` and returns its records; it is a pure
function of the spec (every random draw comes from generators seeded by the spec's seed and the scene name),
so scenes can be made in any process, in any order, with identical bytes.
"""
import hashlib
import json
import os
from dataclasses import dataclass
from typing import Dict, List, Tuple

import cv2
import numpy as np

from .catalog import OBJECT_CLASSES, attribute_for, visibility_token
from .city import City, stable_seed
from .lidar import LidarSimulator, points_in_box
from .render import CameraRenderer, PartTable, frame_geometry, sun_direction
from .rig import CAMERA_NAMES, LIDAR_NAME, build_rig, yaw_quaternion
from .route import CAN_BUS_RATE, random_trajectory
from .world import ANNOTATION_RANGE, populate_scene

KEYFRAME_INTERVAL_US = 500_000  # 2 Hz keyframes
RENDER_RANGE = 140.0  # m: actors farther than this from the ego are not drawn
JPEG_QUALITY = 92


def make_token(*parts) -> str:
    """A 32-hex-digit nuScenes-style token, a pure function of its parts."""
    return hashlib.md5('/'.join(str(p) for p in parts).encode()).hexdigest()


def sensor_token(channel: str) -> str:
    return make_token('sensor', channel)


def category_token(name: str) -> str:
    return make_token('category', name)


def attribute_token(name: str) -> str:
    return make_token('attribute', name)


@dataclass(frozen=True)
class SceneSpec:
    """What one scene is: its split name, location, log, timing, sizes and the output root."""
    name: str
    location: str
    logfile: str
    log_token: str
    start_us: int
    n_samples: int
    sweeps: int  # non-key lidar sweeps between consecutive keyframes
    scale: float
    n_azimuth: int
    seed: int
    root: str  # data root the files are written under


_CITIES: Dict[str, City] = {}


def _city(location: str) -> City:
    if location not in _CITIES:
        _CITIES[location] = City(location)
    return _CITIES[location]


def _f(values) -> List[float]:
    return [float(v) for v in np.asarray(values, dtype=np.float64).ravel()]


class _Tables:
    """Accumulates the records of one scene."""

    def __init__(self):
        self.t: Dict[str, List[dict]] = {k: [] for k in (
            'scene', 'sample', 'sample_data', 'ego_pose', 'calibrated_sensor', 'sample_annotation', 'instance')}

    def add(self, table: str, record: dict) -> dict:
        self.t[table].append(record)
        return record


def _link(records: List[dict]) -> None:
    """Set prev/next tokens along a time-ordered list of records."""
    for i, r in enumerate(records):
        r['prev'] = records[i - 1]['token'] if i > 0 else ''
        r['next'] = records[i + 1]['token'] if i + 1 < len(records) else ''


def generate_scene(spec: SceneSpec) -> Dict[str, List[dict]]:
    """Render and write one scene; returns its records per table (scene, sample, sample_data, ego_pose,
    calibrated_sensor, sample_annotation, instance)."""
    rng = np.random.default_rng(stable_seed('scene', spec.seed, spec.name))
    city = _city(spec.location)
    key_t = np.arange(spec.n_samples) * KEYFRAME_INTERVAL_US / 1e6
    ego = random_trajectory(city, rng, float(key_t[-1]))
    actors = populate_scene(city, ego, key_t, rng)
    jitter = np.concatenate([rng.normal(0, 0.01, (7, 3)), rng.normal(0, np.deg2rad(0.3), (7, 1))], axis=1)
    sensors = build_rig(spec.scale, jitter)
    cams = [CameraRenderer(s) for s in sensors[:6]]
    lidar = LidarSimulator(sensors[6], spec.n_azimuth)
    sun = sun_direction(rng.uniform(-np.pi, np.pi), rng.uniform(np.deg2rad(25), np.deg2rad(65)))
    route_xy, _ = ego.pose(key_t)
    lo, hi = route_xy.min(0) - 200, route_xy.max(0) + 200
    buildings = city.buildings(lo[0], hi[0], lo[1], hi[1])
    tabs = _Tables()
    scene_token = make_token(spec.seed, 'scene', spec.name)

    calib = {}
    for s in sensors:
        rec = tabs.add('calibrated_sensor', dict(
            token=make_token(spec.seed, 'calibrated_sensor', spec.name, s.channel),
            sensor_token=sensor_token(s.channel),
            translation=_f(s.translation), rotation=_f(s.rotation),
            camera_intrinsic=[_f(row) for row in s.intrinsic] if s.modality == 'camera' else []))
        calib[s.channel] = rec['token']

    samples = [tabs.add('sample', dict(token=make_token(spec.seed, 'sample', spec.name, k),
                                       timestamp=spec.start_us + k * KEYFRAME_INTERVAL_US, scene_token=scene_token))
               for k in range(spec.n_samples)]
    _link(samples)
    channel_sd: Dict[str, List[dict]] = {ch: [] for ch in CAMERA_NAMES + (LIDAR_NAME,)}
    width, height = sensors[0].width, sensors[0].height
    visible = np.zeros((spec.n_samples, len(actors)))
    alone = np.zeros((spec.n_samples, len(actors)))
    lidar_pts: Dict[Tuple[int, int], int] = {}

    def sample_data(channel: str, k_sample: int, ts: int, key: bool, filename: str, w: int, h: int) -> dict:
        tok = make_token(spec.seed, 'sample_data', spec.name, channel, ts)
        rec = tabs.add('sample_data', dict(
            token=tok, sample_token=samples[k_sample]['token'], ego_pose_token=tok,
            calibrated_sensor_token=calib[channel], timestamp=ts, fileformat='pcd' if channel == LIDAR_NAME else 'jpg',
            is_key_frame=key, height=h, width=w, filename=filename))
        channel_sd[channel].append(rec)
        return rec

    def ego_pose(token: str, ts: int, xy: np.ndarray, yaw: float) -> None:
        tabs.add('ego_pose', dict(token=token, timestamp=ts, rotation=_f(yaw_quaternion(yaw)),
                                  translation=[float(xy[0]), float(xy[1]), 0.0]))

    parts = PartTable(actors)
    xy0 = np.array([a.xy0 for a in actors]).reshape(-1, 2)
    vel = np.array([a.velocity for a in actors]).reshape(-1, 2)

    def geometry(t: float, ego_xy: np.ndarray):
        pos = xy0 + t * vel
        near = np.linalg.norm(pos - ego_xy, axis=1) < RENDER_RANGE
        bnear = [b for b in buildings if np.hypot(b.x - ego_xy[0], b.y - ego_xy[1]) < 260]
        return frame_geometry(parts, pos, near, bnear), pos

    for k in range(spec.n_samples):
        t = float(key_t[k])
        ts = spec.start_us + k * KEYFRAME_INTERVAL_US
        xy, yaw = ego.pose(np.array([t]))
        xy, yaw = xy[0], float(yaw[0])
        geom, pos = geometry(t, xy)
        for ci, (ch, cam) in enumerate(zip(CAMERA_NAMES, cams)):
            img_rng = np.random.default_rng(stable_seed('image', spec.seed, spec.name, k, ch))
            frame = cam.render(city, geom, xy, yaw, sun, img_rng)
            fname = f'samples/{ch}/{spec.logfile}__{ch}__{ts}.jpg'
            ok, buf = cv2.imencode('.jpg', cv2.cvtColor(frame.image, cv2.COLOR_RGB2BGR),
                                   [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
            with open(os.path.join(spec.root, fname), 'wb') as f:
                f.write(buf.tobytes())
            rec = sample_data(ch, k, ts, True, fname, width, height)
            ego_pose(rec['token'], ts, xy, yaw)
            for owner, n in frame.visible.items():
                visible[k, owner - 1] += n
            for owner, n in frame.alone.items():
                alone[k, owner - 1] += n
        # Lidar: the non-key sweeps leading up to this keyframe, then the keyframe sweep.
        for j in range(spec.sweeps if k > 0 else 0, -1, -1):
            ts_j = ts - j * KEYFRAME_INTERVAL_US // (spec.sweeps + 1)
            t_j = (ts_j - spec.start_us) / 1e6
            sxy, syaw = ego.pose(np.array([t_j]))
            sxy, syaw = sxy[0], float(syaw[0])
            sgeom = geom if j == 0 else geometry(t_j, sxy)[0]
            scan_rng = np.random.default_rng(stable_seed('lidar', spec.seed, spec.name, ts_j))
            pts = lidar.scan(city, sgeom, sxy, syaw, scan_rng)
            folder = 'samples' if j == 0 else 'sweeps'
            fname = f'{folder}/{LIDAR_NAME}/{spec.logfile}__{LIDAR_NAME}__{ts_j}.pcd.bin'
            with open(os.path.join(spec.root, fname), 'wb') as f:
                f.write(pts.tobytes())
            rec = sample_data(LIDAR_NAME, k, ts_j, j == 0, fname, 0, 0)
            ego_pose(rec['token'], ts_j, sxy, syaw)
            if j == 0:
                _count_points(pts, actors, pos, sxy, syaw, lidar, k, lidar_pts)
    for recs in channel_sd.values():
        _link(recs)

    _annotate(spec, tabs, actors, ego, key_t, samples, visible, alone, lidar_pts)
    tabs.add('scene', dict(token=scene_token, log_token=spec.log_token, nbr_samples=spec.n_samples,
                           first_sample_token=samples[0]['token'], last_sample_token=samples[-1]['token'],
                           name=spec.name, description=_describe(actors, ego)))
    _write_can_bus(spec, ego, float(key_t[-1]))
    return tabs.t


def _count_points(pts: np.ndarray, actors, pos: np.ndarray, ego_xy: np.ndarray, ego_yaw: float,
                  lidar: LidarSimulator, k: int, out: Dict[Tuple[int, int], int]) -> None:
    """Lidar points inside each actor's annotation box near the ego (keyframe k)."""
    yaw_w = ego_yaw + lidar.yaw_l2e
    c, s = np.cos(ego_yaw), np.sin(ego_yaw)
    tx, ty = lidar.sensor.translation[:2]
    origin = np.array([ego_xy[0] + c * tx - s * ty, ego_xy[1] + s * tx + c * ty])
    cw, sw = np.cos(yaw_w), np.sin(yaw_w)
    order = np.argsort(pts[:, 0], kind='stable')
    xs = pts[order, 0]
    for i, a in enumerate(actors):
        d = pos[i] - origin
        if np.hypot(*d) > ANNOTATION_RANGE + 15:
            continue
        centre = np.array([cw * d[0] + sw * d[1], -sw * d[0] + cw * d[1], a.size_wlh[2] / 2 - lidar.height])
        reach = float(np.hypot(a.size_wlh[0], a.size_wlh[1])) / 2
        lo, hi = np.searchsorted(xs, [centre[0] - reach, centre[0] + reach])
        near = pts[order[lo:hi]]
        out[(k, i)] = int(points_in_box(near, centre, a.size_wlh, a.yaw - yaw_w).sum())


def _annotate(spec: SceneSpec, tabs: _Tables, actors, ego, key_t, samples, visible, alone, lidar_pts) -> None:
    """Instances and their sample_annotation chains: like nuScenes, an object is annotated from the first to the
    last keyframe in which it is within ANNOTATION_RANGE and observed (lidar points on it or pixels of it visible
    in a camera); keyframes in between stay annotated so the prev/next chain is contiguous."""
    ego_xy, _ = ego.pose(key_t)
    for i, a in enumerate(actors):
        dist = np.linalg.norm(a.position(key_t) - ego_xy, axis=1)
        seen = np.array([lidar_pts.get((k, i), 0) > 0 or visible[k, i] > 0 for k in range(len(key_t))])
        ks = np.nonzero((dist <= ANNOTATION_RANGE) & seen)[0]
        if len(ks) == 0 or ks[-1] - ks[0] < 1:
            continue
        inst_token = make_token(spec.seed, 'instance', spec.name, i)
        speed = float(np.hypot(*a.velocity))
        attr = attribute_for(a.name, speed)
        anns = []
        for k in range(ks[0], ks[-1] + 1):
            xy = a.position(key_t[k])[0]
            frac = visible[k, i] / alone[k, i] if alone[k, i] > 0 else 0.0
            anns.append(tabs.add('sample_annotation', dict(
                token=make_token(spec.seed, 'sample_annotation', spec.name, i, k), sample_token=samples[k]['token'],
                instance_token=inst_token, visibility_token=visibility_token(frac),
                attribute_tokens=[attribute_token(attr)] if attr else [],
                translation=[float(xy[0]), float(xy[1]), float(a.size_wlh[2] / 2)], size=_f(a.size_wlh),
                rotation=_f(yaw_quaternion(a.yaw)), num_lidar_pts=int(lidar_pts.get((k, i), 0)), num_radar_pts=0)))
        _link(anns)
        tabs.add('instance', dict(token=inst_token, category_token=category_token(OBJECT_CLASSES[a.name].category),
                                  nbr_annotations=len(anns), first_annotation_token=anns[0]['token'],
                                  last_annotation_token=anns[-1]['token']))


def _describe(actors, ego) -> str:
    moving = sum(a.moving for a in actors)
    drive = 'ego waiting' if ego.v0 == 0 else f'ego driving at ~{ego.v0:.0f} m/s'
    turns = sum(1 for p in ego.path.pieces if type(p).__name__ == '_Arc')
    return f'Synthetic street scene, {drive}, {turns} turn(s), {len(actors)} objects ({moving} moving).'


def _write_can_bus(spec: SceneSpec, ego, duration: float) -> None:
    """``can_bus/<scene>_pose.json``: 20 Hz pose messages from 1 s before the first to 1 s after the last sample."""
    t = np.arange(-1.0, duration + 1.0 + 1e-9, 1.0 / CAN_BUS_RATE)
    xy, yaw = ego.pose(t)
    kin = ego.can_bus_pose(t)
    msgs = [dict(accel=_f(kin['accel'][i]), orientation=_f(yaw_quaternion(yaw[i])), pos=[float(xy[i, 0]),
                 float(xy[i, 1]), 0.0], rotation_rate=_f(kin['rotation_rate'][i]),
                 utime=int(spec.start_us + round(t[i] * 1e6)), vel=_f(kin['vel'][i])) for i in range(len(t))]
    with open(os.path.join(spec.root, 'can_bus', f'{spec.name}_pose.json'), 'w') as f:
        json.dump(msgs, f)
