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
from .rig import Sensor, quaternion_matrix
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


def actor_boxes(actor: Actor, xy: np.ndarray) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Part centres ``[K, 3]`` (world), half extents ``[K, 3]`` and RGB ``[K, 3]`` of an actor at world ``xy``."""
    w, l, h = actor.size_wlh
    parts = actor.parts
    lo = np.array([p.lo for p in parts]) * np.array([l, w, h])
    hi = np.array([p.hi for p in parts]) * np.array([l, w, h])
    local = (lo + hi) / 2.0
    c, s = np.cos(actor.yaw), np.sin(actor.yaw)
    centers = np.stack([xy[0] + c * local[:, 0] - s * local[:, 1], xy[1] + s * local[:, 0] + c * local[:, 1],
                        local[:, 2]], axis=1)
    colors = np.array([part_color(actor.cls, p.color) for p in parts], dtype=np.float64) * actor.tint
    return centers, (hi - lo) / 2.0, np.clip(colors, 0, 255)


def frame_geometry(actors: Sequence[Actor], positions: np.ndarray, buildings: Sequence[Building]) -> FrameGeometry:
    """Collect the parts of ``actors`` (at world ``positions`` ``[N, 2]``) and of ``buildings``."""
    centers, yaws, halves, colors, owners = [], [], [], [], []
    for actor, xy in zip(actors, positions):
        c, hf, col = actor_boxes(actor, xy)
        centers.append(c)
        halves.append(hf)
        colors.append(col)
        yaws.append(np.full(len(c), actor.yaw))
        owners.append(np.full(len(c), actor.index + 1))
    if buildings:
        centers.append(np.array([[b.x, b.y, b.height / 2] for b in buildings]))
        halves.append(np.array([[b.length / 2, b.width / 2, b.height / 2] for b in buildings]))
        colors.append(np.array([b.color for b in buildings], dtype=np.float64))
        yaws.append(np.zeros(len(buildings)))
        owners.append(np.zeros(len(buildings), dtype=np.int64))
    if not centers:
        z3, z = np.zeros((0, 3)), np.zeros(0)
        return FrameGeometry(z3, z, z3, z3, z.astype(np.int64), np.zeros((0, 8, 3)), np.zeros((0, 6, 3)))
    center, yaw, half = np.concatenate(centers), np.concatenate(yaws), np.concatenate(halves)
    c, s = np.cos(yaw), np.sin(yaw)
    rot = np.zeros((len(yaw), 3, 3))
    rot[:, 0, 0], rot[:, 0, 1], rot[:, 1, 0], rot[:, 1, 1], rot[:, 2, 2] = c, -s, s, c, 1.0
    local = _SIGNS[None] * half[:, None, :]  # [P, 8, 3]
    corners = center[:, None, :] + np.einsum('pij,pkj->pki', rot, local)
    axes = np.eye(3)[list(_FACE_AXIS)] * np.array(_FACE_SIGN)[:, None]  # [6, 3]
    normals = np.einsum('pij,fj->pfi', rot, axes)
    return FrameGeometry(center, yaw, half, np.concatenate(colors), np.concatenate(owners).astype(np.int64),
                         corners, normals)


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
        self.ground_xy = (self.t_c2e[None, :2] + t[gm][:, None] * rays[..., :2][gm])  # [G, 2] ego frame
        self.ground_footprint = dist[gm] / self.k[0, 0] / np.maximum(-dz[gm], 1e-3)
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
        gx = ego_xy[0] + c * self.ground_xy[:, 0] - s * self.ground_xy[:, 1]
        gy = ego_xy[1] + s * self.ground_xy[:, 0] + c * self.ground_xy[:, 1]
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
            shade = 0.48 + 0.52 * np.clip(geom.normals @ sun, 0.0, None)  # [P, 6]
            owner_polys: Dict[int, List[np.ndarray]] = {}
            for p in order:
                pts_cam = cam_corners[p]
                z = pts_cam[:, 2]
                if z.max() <= NEAR:
                    continue
                for f in np.nonzero(faces_vis[p])[0]:
                    poly = pts_cam[list(_FACES[f])]
                    if poly[:, 2].min() < NEAR:
                        poly = _clip_near(poly)
                        if len(poly) < 3:
                            continue
                    uv = self._project(poly)
                    if uv is None:
                        continue
                    color = np.clip(geom.color[p] * shade[p, f], 0, 255).round().astype(int)
                    cv2.fillConvexPoly(img, uv, color.tolist(), lineType=cv2.LINE_AA, shift=SUBPIXEL_SHIFT)
                    owner = int(geom.owner[p])
                    cv2.fillConvexPoly(ids, uv, owner, lineType=cv2.LINE_8, shift=SUBPIXEL_SHIFT)
                    if owner:
                        owner_polys.setdefault(owner, []).append(uv)
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
        """Fixed-point pixel polygon ``[K, 2]`` int32, or None if it misses the image."""
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
    noise = rng.standard_normal(img.shape[:2] + (1,)).astype(np.float32) * 2.5
    return img * gain.astype(np.float32) + noise


def sun_direction(azimuth: float, elevation: float) -> np.ndarray:
    """Unit vector towards the sun (world frame)."""
    return np.array([np.cos(elevation) * np.cos(azimuth), np.cos(elevation) * np.sin(azimuth), np.sin(elevation)])
