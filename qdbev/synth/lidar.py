"""LIDAR_TOP simulation: a 32-beam spinning lidar (HDL-32E-like) ray-cast against the ground and every box part.

Points are the first hit of each ray (so only surfaces facing the sensor are seen), in the lidar frame, float32
columns x, y, z, intensity, ring index, as nuScenes' ``.pcd.bin`` files.
"""
from typing import Tuple

import numpy as np

from .city import City
from .render import FrameGeometry
from .rig import Sensor

ELEVATION_RANGE_DEG = (-30.67, 10.67)
N_RINGS = 32
MAX_RANGE = 70.0
MIN_RANGE = 1.0
RANGE_NOISE = 0.01  # m


class LidarSimulator:
    """Ray caster for one mounted lidar; ``n_azimuth`` columns per revolution."""

    def __init__(self, sensor: Sensor, n_azimuth: int = 720):
        self.sensor = sensor
        self.n_azimuth = n_azimuth
        self.height = float(sensor.translation[2])  # above the ground (the ego frame has z = 0 on the ground)
        self.yaw_l2e = float(np.arctan2(sensor.rotation_matrix[1, 0], sensor.rotation_matrix[0, 0]))
        self.elev = np.deg2rad(np.linspace(*ELEVATION_RANGE_DEG, N_RINGS))  # [R], ascending
        self.azim = -np.pi + (np.arange(n_azimuth) + 0.5) * 2 * np.pi / n_azimuth  # [A], lidar frame
        ce, se = np.cos(self.elev)[:, None], np.sin(self.elev)[:, None]
        self.dirs = np.stack([ce * np.cos(self.azim)[None], ce * np.sin(self.azim)[None],
                              np.broadcast_to(se, (N_RINGS, n_azimuth))], -1)  # [R, A, 3] lidar frame
        down = self.dirs[..., 2] < -1e-6
        self.t_ground = np.where(down, self.height / np.maximum(-self.dirs[..., 2], 1e-9), np.inf)

    def scan(self, city: City, geom: FrameGeometry, ego_xy: np.ndarray, ego_yaw: float,
             rng: np.random.Generator) -> np.ndarray:
        """One sweep at the ego pose: ``[N, 5]`` float32 (x, y, z, intensity, ring) in the lidar frame."""
        yaw_w = ego_yaw + self.yaw_l2e  # lidar heading in the world
        c, s = np.cos(ego_yaw), np.sin(ego_yaw)
        tx, ty = self.sensor.translation[:2]
        origin = np.array([ego_xy[0] + c * tx - s * ty, ego_xy[1] + s * tx + c * ty, self.height])
        t_best = self.t_ground.copy()
        inten = np.zeros_like(t_best)
        gmask = np.isfinite(t_best) & (t_best < MAX_RANGE)
        # Ground intensity from the city texture at the hit points.
        gd = self.dirs[gmask]
        tg = t_best[gmask]
        cw, sw = np.cos(yaw_w), np.sin(yaw_w)
        gx = origin[0] + tg * (cw * gd[:, 0] - sw * gd[:, 1])
        gy = origin[1] + tg * (sw * gd[:, 0] + cw * gd[:, 1])
        inten[gmask] = city.ground_intensity(gx, gy)
        if len(geom.center):
            self._cast_parts(geom, origin, yaw_w, t_best, inten)
        keep = np.isfinite(t_best) & (t_best < MAX_RANGE) & (t_best >= MIN_RANGE)
        t = t_best[keep] + rng.standard_normal(int(keep.sum())) * RANGE_NOISE
        pts = self.dirs[keep] * t[:, None]
        ring = np.broadcast_to(np.arange(N_RINGS)[:, None], t_best.shape)[keep]
        return np.concatenate([pts, inten[keep][:, None], ring[:, None]], axis=1).astype(np.float32)

    def _cast_parts(self, geom: FrameGeometry, origin: np.ndarray, yaw_w: float,
                    t_best: np.ndarray, inten: np.ndarray) -> None:
        """Slab-test every (ray, part) pair whose ring/azimuth window can meet the part; keep the nearest hits
        (updates ``t_best`` / ``inten`` ``[R, A]`` in place)."""
        n_az = self.n_azimuth
        step = 2 * np.pi / n_az
        rel = geom.center - origin  # [P, 3]
        r = np.hypot(rel[:, 0], rel[:, 1])
        rho = np.hypot(geom.half[:, 0], geom.half[:, 1])
        near, far = np.maximum(r - rho, 0.05), r + rho
        zlo, zhi = rel[:, 2] - geom.half[:, 2], rel[:, 2] + geom.half[:, 2]
        e_lo = np.minimum(np.arctan2(zlo, near), np.arctan2(zlo, far)) - 0.03
        e_hi = np.maximum(np.arctan2(zhi, near), np.arctan2(zhi, far)) + 0.03
        r0 = np.searchsorted(self.elev, e_lo)
        r1 = np.searchsorted(self.elev, e_hi, side='right')
        az_c = np.arctan2(rel[:, 1], rel[:, 0]) - yaw_w
        half_angle = np.arcsin(np.clip(rho / np.maximum(r, 1e-6), 0.0, 1.0)) + step
        j0 = np.floor((az_c - half_angle + np.pi) / step).astype(np.int64)
        n_c = np.ceil((az_c + half_angle + np.pi) / step).astype(np.int64) - j0 + 1
        surround = r <= rho + 0.05
        j0[surround], n_c[surround] = 0, n_az
        n_c = np.minimum(n_c, n_az)
        n_r = np.maximum(r1 - r0, 0)
        n_r[r - rho > MAX_RANGE] = 0
        count = n_r * n_c
        if count.sum() == 0:
            return
        part = np.repeat(np.arange(len(count)), count)
        k = np.arange(count.sum()) - np.repeat(np.cumsum(count) - count, count)
        row = r0[part] + k // n_c[part]
        col = (j0[part] + k % n_c[part]) % n_az
        d = self.dirs[row, col]  # [Q, 3] lidar frame
        a = yaw_w - geom.yaw[part]  # lidar frame -> part frame
        ca, sa = np.cos(a), np.sin(a)
        dl = np.stack([ca * d[:, 0] - sa * d[:, 1], sa * d[:, 0] + ca * d[:, 1], d[:, 2]], -1)
        cy, sy = np.cos(geom.yaw), np.sin(geom.yaw)
        o = np.stack([-(cy * rel[:, 0] + sy * rel[:, 1]), -(-sy * rel[:, 0] + cy * rel[:, 1]), -rel[:, 2]], -1)
        half = geom.half[part]
        with np.errstate(divide='ignore', invalid='ignore'):
            t1 = (-half - o[part]) / dl
            t2 = (half - o[part]) / dl
        tnear = np.nanmax(np.minimum(t1, t2), axis=-1)
        tfar = np.nanmin(np.maximum(t1, t2), axis=-1)
        ray = row * n_az + col
        hit = (tnear <= tfar) & (tnear > 0) & (tnear < t_best.ravel()[ray])
        if not hit.any():
            return
        ray, tnear, part = ray[hit], tnear[hit], part[hit]
        first = np.lexsort((tnear, ray))  # by ray, nearest first
        ray, tnear, part = ray[first], tnear[first], part[first]
        uniq = np.concatenate([[True], ray[1:] != ray[:-1]])
        value = np.where(geom.owner > 0, 10.0 + 0.25 * geom.color.mean(1), 30.0)
        t_best.ravel()[ray[uniq]] = tnear[uniq]
        inten.ravel()[ray[uniq]] = value[part[uniq]]


def points_in_box(points: np.ndarray, center: np.ndarray, size_wlh: Tuple[float, float, float],
                  yaw: float) -> np.ndarray:
    """Mask ``[N]`` of points ``[N, >=3]`` inside a yawed box (same frame), size [w, l, h] (nuScenes order)."""
    d = points[:, :3] - np.asarray(center)[None]
    c, s = np.cos(yaw), np.sin(yaw)
    x = c * d[:, 0] + s * d[:, 1]
    y = -s * d[:, 0] + c * d[:, 1]
    w, l, h = size_wlh
    return (np.abs(x) <= l / 2) & (np.abs(y) <= w / 2) & (np.abs(d[:, 2]) <= h / 2)
