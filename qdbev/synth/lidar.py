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
        _, gi = city.ground(gx, gy, np.full(gx.shape, 0.1))
        inten[gmask] = gi
        for p in range(len(geom.center)):
            self._cast_part(geom, p, origin, yaw_w, t_best, inten)
        keep = np.isfinite(t_best) & (t_best < MAX_RANGE) & (t_best >= MIN_RANGE)
        t = t_best[keep] + rng.standard_normal(int(keep.sum())) * RANGE_NOISE
        pts = self.dirs[keep] * t[:, None]
        pts[:, 2] += 0.0
        ring = np.broadcast_to(np.arange(N_RINGS)[:, None], t_best.shape)[keep]
        return np.concatenate([pts, inten[keep][:, None], ring[:, None]], axis=1).astype(np.float32)

    def _cast_part(self, geom: FrameGeometry, p: int, origin: np.ndarray, yaw_w: float,
                   t_best: np.ndarray, inten: np.ndarray) -> None:
        """Intersect the rays that can reach box part ``p`` and keep the nearer hits (in place)."""
        centre, half, yaw = geom.center[p], geom.half[p], float(geom.yaw[p])
        rel = centre - origin
        r = float(np.hypot(rel[0], rel[1]))
        rho = float(np.hypot(half[0], half[1]))
        if r - rho > MAX_RANGE:
            return
        step = 2 * np.pi / self.n_azimuth
        if r <= rho + 0.05:
            cols = np.arange(self.n_azimuth)
        else:
            az_c = np.arctan2(rel[1], rel[0]) - yaw_w
            half_angle = np.arcsin(min(rho / r, 1.0)) + step
            j0 = int(np.floor((az_c - half_angle + np.pi) / step))
            j1 = int(np.ceil((az_c + half_angle + np.pi) / step))
            cols = np.arange(j0, j1 + 1) % self.n_azimuth
        near, far = max(r - rho, 0.05), r + rho
        zlo, zhi = rel[2] - half[2], rel[2] + half[2]
        e_lo = min(np.arctan2(zlo, near), np.arctan2(zlo, far)) - 0.03
        e_hi = max(np.arctan2(zhi, near), np.arctan2(zhi, far)) + 0.03
        r0, r1 = np.searchsorted(self.elev, e_lo), np.searchsorted(self.elev, e_hi, side='right')
        if r1 <= r0:
            return
        d = self.dirs[r0:r1][:, cols]  # [r, c, 3] lidar frame
        a = yaw_w - yaw  # lidar frame -> part frame rotation angle
        ca, sa = np.cos(a), np.sin(a)
        dl = np.stack([ca * d[..., 0] - sa * d[..., 1], sa * d[..., 0] + ca * d[..., 1], d[..., 2]], -1)
        cy, sy = np.cos(yaw), np.sin(yaw)
        o = np.array([cy * -rel[0] + sy * -rel[1], -sy * -rel[0] + cy * -rel[1], -rel[2]])  # origin in part frame
        with np.errstate(divide='ignore', invalid='ignore'):
            t1 = (-half - o) / dl
            t2 = (half - o) / dl
        tnear = np.nanmax(np.minimum(t1, t2), axis=-1)
        tfar = np.nanmin(np.maximum(t1, t2), axis=-1)
        hit = (tnear <= tfar) & (tnear > 0)
        sub_t = t_best[r0:r1][:, cols]
        better = hit & (tnear < sub_t)
        if not better.any():
            return
        rr, cc = np.nonzero(better)
        t_best[r0 + rr, cols[cc]] = tnear[rr, cc]
        owner = int(geom.owner[p])
        value = 10.0 + 0.25 * float(np.mean(geom.color[p])) if owner else 30.0
        inten[r0 + rr, cols[cc]] = value


def points_in_box(points: np.ndarray, center: np.ndarray, size_wlh: Tuple[float, float, float],
                  yaw: float) -> np.ndarray:
    """Mask ``[N]`` of points ``[N, >=3]`` inside a yawed box (same frame), size [w, l, h] (nuScenes order)."""
    d = points[:, :3] - np.asarray(center)[None]
    c, s = np.cos(yaw), np.sin(yaw)
    x = c * d[:, 0] + s * d[:, 1]
    y = -s * d[:, 0] + c * d[:, 1]
    w, l, h = size_wlh
    return (np.abs(x) <= l / 2) & (np.abs(y) <= w / 2) & (np.abs(d[:, 2]) <= h / 2)
