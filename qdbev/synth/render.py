"""Camera rendering: sky, a textured ground fixed in the world, and objects as shaded coloured boxes.

Objects are drawn with the painter's algorithm: every part (a box) is ordered by its closest distance to the
camera, farthest first, and only its camera-facing faces are filled (``cv2.fillConvexPoly``); faces crossing the
near plane are clipped in 3D first. An id buffer drawn with the same polygons gives, per object, how many of its
pixels are visible, and each object is also drawn alone to count all its pixels: their ratio is its visibility.
"""
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

import cv2
import numpy as np

from .catalog import part_color
from .city import Building, City
from .rig import Sensor
from .world import Actor

NEAR = 0.3  # m, near clipping plane
FAR_GROUND = 400.0  # m, ground beyond this is sky/haze
HAZE_DISTANCE = 220.0  # m
SUBPIXEL_SHIFT = 2  # cv2 fixed-point bits
SKY_HORIZON = np.array([205.0, 214.0, 224.0])
SKY_ZENITH = np.array([105.0, 146.0, 206.0])

# Box corners (sx, sy, sz) in {-1, 1}^3 with index 4*ix + 2*iy + iz, and the faces (corner indices, axis, sign).
_SIGNS = np.array([[2 * ix - 1, 2 * iy - 1, 2 * iz - 1] for ix in (0, 1) for iy in (0, 1) for iz in (0, 1)],
                  dtype=np.float64)
_FACES = ((0, 2, 3, 1), (4, 5, 7, 6), (0, 1, 5, 4), (2, 6, 7, 3), (0, 4, 6, 2), (1, 3, 7, 5))
_FACE_IDX = np.array(_FACES)
_FACE_AXIS = (0, 0, 1, 1, 2, 2)
_FACE_SIGN = (-1, 1, -1, 1, -1, 1)


@dataclass
class FrameGeometry:
    """Every box part in the world at one instant (shared by the six cameras).

    Attributes:
        center: ``[P, 3]`` part centres (world); yaw: ``[P]``; half: ``[P, 3]`` half extents (part frame).
        color: ``[P, 3]`` RGB; owner: ``[P]`` 1 + actor index, 0 for scenery.
        corners: ``[P, 8, 3]`` world corners; normals: ``[P, 6, 3]`` world face normals.
    """
    center: np.ndarray
    yaw: np.ndarray
    half: np.ndarray
    color: np.ndarray
    owner: np.ndarray
    corners: np.ndarray
    normals: np.ndarray


class PartTable:
    """The box parts of every actor of a scene in the actor's own frame, tabulated once: local centres ``[K, 3]``,
    half extents ``[K, 3]``, RGB ``[K, 3]``, owning actor index ``[K]``."""

    def __init__(self, actors: Sequence[Actor]):
        centers, halves, colors, owner = [], [], [], []
        for i, actor in enumerate(actors):
            w, l, h = actor.size_wlh
            parts = actor.parts
            lo = np.array([p.lo for p in parts]) * np.array([l, w, h])
            hi = np.array([p.hi for p in parts]) * np.array([l, w, h])
            centers.append((lo + hi) / 2.0)
            halves.append((hi - lo) / 2.0)
            colors.append(np.clip(np.array([part_color(actor.cls, p.color) for p in parts], dtype=np.float64)
                                  * actor.tint, 0, 255))
            owner.append(np.full(len(parts), i))
        self.local = np.concatenate(centers) if actors else np.zeros((0, 3))
        self.half = np.concatenate(halves) if actors else np.zeros((0, 3))
        self.color = np.concatenate(colors) if actors else np.zeros((0, 3))
        self.actor = np.concatenate(owner).astype(np.int64) if actors else np.zeros(0, dtype=np.int64)
        self.yaw = np.array([a.yaw for a in actors])
        self.index = np.array([a.index for a in actors], dtype=np.int64)


def frame_geometry(table: PartTable, positions: np.ndarray, selected: np.ndarray,
                   buildings: Sequence[Building]) -> FrameGeometry:
    """World boxes of the parts of the selected actors (``selected`` ``[N]`` bool, actor world ``positions``
    ``[N, 2]``) and of ``buildings``."""
    keep = selected[table.actor]
    act = table.actor[keep]
    yaw = table.yaw[act]
    c, s = np.cos(yaw), np.sin(yaw)
    local = table.local[keep]
    xy = positions[act]
    center = np.stack([xy[:, 0] + c * local[:, 0] - s * local[:, 1], xy[:, 1] + s * local[:, 0] + c * local[:, 1],
                       local[:, 2]], axis=1)
    half, color, owner = table.half[keep], table.color[keep], table.index[act] + 1
    if buildings:
        center = np.concatenate([center, np.array([[b.x, b.y, b.height / 2] for b in buildings])])
        half = np.concatenate([half, np.array([[b.length / 2, b.width / 2, b.height / 2] for b in buildings])])
        color = np.concatenate([color, np.array([b.color for b in buildings], dtype=np.float64)])
        yaw = np.concatenate([yaw, np.zeros(len(buildings))])
        owner = np.concatenate([owner, np.zeros(len(buildings), dtype=np.int64)])
    c, s = np.cos(yaw), np.sin(yaw)
    rot = np.zeros((len(yaw), 3, 3))
    rot[:, 0, 0], rot[:, 0, 1], rot[:, 1, 0], rot[:, 1, 1], rot[:, 2, 2] = c, -s, s, c, 1.0
    corners = center[:, None, :] + np.einsum('pij,pkj->pki', rot, _SIGNS[None] * half[:, None, :])
    axes = np.eye(3)[list(_FACE_AXIS)] * np.array(_FACE_SIGN)[:, None]  # [6, 3]
    normals = np.einsum('pij,fj->pfi', rot, axes)
    return FrameGeometry(center, yaw, half, color, owner.astype(np.int64), corners, normals)


@dataclass
class CameraFrame:
    """One rendered image: RGB ``[H, W, 3]`` uint8, id buffer ``[H, W]`` int32 (1 + actor index, 0 none),
    and per-actor pixel counts: visible (``{owner: n}``) and unoccluded (drawn alone)."""
    image: np.ndarray
    ids: np.ndarray
    visible: Dict[int, int]
    alone: Dict[int, int]


class CameraRenderer:
    """Renders one calibrated camera. Per-pixel ground rays are fixed in the ego frame and computed once."""

    def __init__(self, sensor: Sensor):
        self.sensor = sensor
        self.k = sensor.intrinsic
        self.width, self.height = sensor.width, sensor.height
        self.r_c2e = sensor.rotation_matrix
        self.t_c2e = np.asarray(sensor.translation, dtype=np.float64)
        u, v = np.meshgrid(np.arange(self.width, dtype=np.float64), np.arange(self.height, dtype=np.float64))
        rays = np.stack([(u - self.k[0, 2]) / self.k[0, 0], (v - self.k[1, 2]) / self.k[1, 1], np.ones_like(u)], -1)
        rays = rays @ self.r_c2e.T  # ego frame [H, W, 3]
        norm = np.linalg.norm(rays, axis=-1)
        dz = rays[..., 2] / norm
        t = np.where(dz < -1e-6, -self.t_c2e[2] / np.minimum(rays[..., 2], -1e-9), np.inf)
        dist = t * norm
        self.ground_mask = dist < FAR_GROUND
        gm = self.ground_mask
        self.ground_xy = (self.t_c2e[None, :2] + t[gm][:, None] * rays[..., :2][gm]).astype(np.float32)  # [G, 2]
        self.ground_footprint = (dist[gm] / self.k[0, 0] / np.maximum(-dz[gm], 1e-3)).astype(np.float32)
        self.haze = (1.0 - np.exp(-dist[gm] / HAZE_DISTANCE)).astype(np.float32)[:, None]
        elev = np.clip(dz / 0.45, 0.0, 1.0)[..., None]
        self.sky = (SKY_HORIZON * (1 - elev) + SKY_ZENITH * elev).astype(np.float32)

    def _pose(self, ego_xy: np.ndarray, ego_yaw: float) -> Tuple[np.ndarray, np.ndarray]:
        """World -> camera rotation [3, 3] and the camera centre in the world [3]."""
        c, s = np.cos(ego_yaw), np.sin(ego_yaw)
        r_e2w = np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])
        r_c2w = r_e2w @ self.r_c2e
        centre = np.array([ego_xy[0], ego_xy[1], 0.0]) + r_e2w @ self.t_c2e
        return r_c2w.T, centre

    def background(self, city: City, ego_xy: np.ndarray, ego_yaw: float) -> np.ndarray:
        """Sky and textured ground ``[H, W, 3]`` float32 RGB."""
        img = self.sky.copy()
        c, s = np.cos(ego_yaw), np.sin(ego_yaw)
        gxy = self.ground_xy  # float32, relative to the ego then shifted: ~1e-4 m precision over the map
        gx = np.float32(ego_xy[0]) + np.float32(c) * gxy[:, 0] - np.float32(s) * gxy[:, 1]
        gy = np.float32(ego_xy[1]) + np.float32(s) * gxy[:, 0] + np.float32(c) * gxy[:, 1]
        rgb, _ = city.ground(gx, gy, self.ground_footprint)
        img[self.ground_mask] = rgb * (1 - self.haze) + SKY_HORIZON.astype(np.float32) * self.haze
        return img

    def render(self, city: City, geom: FrameGeometry, ego_xy: np.ndarray, ego_yaw: float,
               sun: np.ndarray, rng: Optional[np.random.Generator] = None) -> CameraFrame:
        """Render the camera at the ego pose; ``sun`` is the unit vector towards the sun (world); ``rng`` adds the
        per-image lighting noise (gain, colour balance, sensor noise)."""
        img = np.clip(self.background(city, ego_xy, ego_yaw), 0, 255).astype(np.uint8)
        ids = np.zeros((self.height, self.width), dtype=np.int32)
        r_wc, cam = self._pose(ego_xy, ego_yaw)
        alone: Dict[int, int] = {}
        if len(geom.center):
            order, faces_vis = self._visible_parts(geom, cam)
            cam_corners = (geom.corners - cam) @ r_wc.T  # [P, 8, 3]
            z = cam_corners[..., 2]
            in_front = z.min(1) >= NEAR  # parts needing no clipping
            uv = cam_corners[..., :2] / np.maximum(z, NEAR)[..., None] * np.array([self.k[0, 0], self.k[1, 1]]) \
                + self.k[:2, 2]
            off_image = in_front & ((uv[..., 0].max(1) < -1) | (uv[..., 0].min(1) > self.width)
                                    | (uv[..., 1].max(1) < -1) | (uv[..., 1].min(1) > self.height))
            drawn = (z.max(1) > NEAR) & ~off_image & faces_vis.any(1)
            uv_fixed = np.round(np.clip(uv, -1e5, 1e5) * (1 << SUBPIXEL_SHIFT)).astype(np.int32)
            shade = 0.55 + 0.45 * np.clip(geom.normals @ sun, 0.0, None)  # [P, 6]
            colors = np.clip(geom.color[:, None, :] * shade[..., None], 0, 255).round().astype(np.int64)
            owner_polys: Dict[int, List[np.ndarray]] = {}
            for p in order[drawn[order]]:
                owner = int(geom.owner[p])
                for f in np.nonzero(faces_vis[p])[0]:
                    if in_front[p]:
                        poly = uv_fixed[p, _FACE_IDX[f]]
                    else:
                        poly = self._project(_clip_near(cam_corners[p, _FACE_IDX[f]]))
                        if poly is None:
                            continue
                    cv2.fillConvexPoly(img, poly, colors[p, f].tolist(), lineType=cv2.LINE_AA, shift=SUBPIXEL_SHIFT)
                    cv2.fillConvexPoly(ids, poly, owner, lineType=cv2.LINE_8, shift=SUBPIXEL_SHIFT)
                    if owner:
                        owner_polys.setdefault(owner, []).append(poly)
            for owner, polys in owner_polys.items():
                alone[owner] = self._area_alone(polys)
        counts = np.bincount(ids.ravel())
        visible = {int(i): int(n) for i, n in enumerate(counts) if i > 0 and n > 0}
        if rng is not None:
            img = np.clip(_lighting_noise(img.astype(np.float32), rng), 0, 255).astype(np.uint8)
        return CameraFrame(img, ids, visible, alone)

    def _visible_parts(self, geom: FrameGeometry, cam: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
        """Parts far-to-near by the distance from the camera to their closest point, and which of their six faces
        face the camera ``[P, 6]``."""
        d = cam[None, :] - geom.center
        c, s = np.cos(geom.yaw), np.sin(geom.yaw)
        local = np.stack([c * d[:, 0] + s * d[:, 1], -s * d[:, 0] + c * d[:, 1], d[:, 2]], axis=1)
        outside = np.maximum(np.abs(local) - geom.half, 0.0)
        dist = np.linalg.norm(outside, axis=1)
        faces = np.stack([local[:, ax] * sg > geom.half[:, ax] for ax, sg in zip(_FACE_AXIS, _FACE_SIGN)], axis=1)
        return np.argsort(-dist, kind='stable'), faces

    def _project(self, poly_cam: np.ndarray) -> Optional[np.ndarray]:
        """Fixed-point pixel polygon ``[K, 2]`` int32 of a clipped camera-frame polygon, None if it misses the image."""
        if len(poly_cam) < 3:
            return None
        uv = poly_cam[:, :2] / poly_cam[:, 2:3] * np.array([self.k[0, 0], self.k[1, 1]]) + self.k[:2, 2]
        if (uv[:, 0].max() < -1 or uv[:, 0].min() > self.width or uv[:, 1].max() < -1
                or uv[:, 1].min() > self.height):
            return None
        uv = np.clip(uv, -1e5, 1e5)
        return np.round(uv * (1 << SUBPIXEL_SHIFT)).astype(np.int32)

    def _area_alone(self, polys: List[np.ndarray]) -> int:
        """Pixels an object covers when drawn alone (within the image)."""
        allp = np.concatenate(polys) >> SUBPIXEL_SHIFT
        x0, y0 = max(int(allp[:, 0].min()) - 1, 0), max(int(allp[:, 1].min()) - 1, 0)
        x1, y1 = min(int(allp[:, 0].max()) + 2, self.width), min(int(allp[:, 1].max()) + 2, self.height)
        if x1 <= x0 or y1 <= y0:
            return 0
        mask = np.zeros((y1 - y0, x1 - x0), dtype=np.uint8)
        off = np.array([x0, y0], dtype=np.int32) << SUBPIXEL_SHIFT
        for uv in polys:
            cv2.fillConvexPoly(mask, uv - off, 1, lineType=cv2.LINE_8, shift=SUBPIXEL_SHIFT)
        return int(mask.sum())


def _clip_near(poly: np.ndarray) -> np.ndarray:
    """Sutherland-Hodgman clip of a convex 3D polygon ``[K, 3]`` (camera frame) to z >= NEAR."""
    out = []
    n = len(poly)
    for i in range(n):
        a, b = poly[i], poly[(i + 1) % n]
        ina, inb = a[2] >= NEAR, b[2] >= NEAR
        if ina:
            out.append(a)
        if ina != inb:
            t = (NEAR - a[2]) / (b[2] - a[2])
            out.append(a + t * (b - a))
    return np.array(out) if out else np.zeros((0, 3))


def _lighting_noise(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Per-image exposure gain, colour balance and sensor noise."""
    gain = rng.uniform(0.85, 1.15) * rng.uniform(0.95, 1.05, size=3)
    noise = rng.standard_normal(img.shape[:2] + (1,), dtype=np.float32) * np.float32(2.5)
    return img * gain.astype(np.float32) + noise


def sun_direction(azimuth: float, elevation: float) -> np.ndarray:
    """Unit vector towards the sun (world frame)."""
    return np.array([np.cos(elevation) * np.cos(azimuth), np.cos(elevation) * np.sin(azimuth), np.sin(elevation)])
