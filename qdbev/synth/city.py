"""A procedural city per nuScenes location: a street grid, buildings, a ground texture fixed in the world, map png.

Streets run along x and y every ``block`` metres (centre lines at ``offset + k * block``). Cross-section, from
the centre line outwards: two driving lanes (centres at +-1.75 m), parking/bike lanes (+-5.25 m), road edge at
7 m, sidewalk to 10 m, then block interiors (grass) with buildings set back 12 m from the centre line.
Everything is a pure function of world (x, y), so every camera, every scene and the map agree.
"""
import hashlib
from dataclasses import dataclass
from typing import Dict, List, Tuple

import cv2
import numpy as np

ROAD_HALF = 7.0
LANE_CENTER = 1.75
PARK_CENTER = 5.25
LANE_EDGE = 3.5
SIDEWALK_OUT = 10.0
SIDEWALK_MID = 8.5
BUILDING_SETBACK = 12.0
MAP_RESOLUTION = 0.1  # m per map pixel (nuScenes' MapMask default)
MAP_EXTENT = 500.0  # m, square map [0, MAP_EXTENT]^2
TEXTURE_CELL = 0.08  # m per noise texel
BLOCK_CELL = 0.1  # m per texel of the tabulated street pattern (level 0)
TEXTURE_SIZE = 256

ASPHALT = np.array([78.0, 78.0, 84.0])
MARKING = np.array([222.0, 222.0, 210.0])
SIDEWALK = np.array([152.0, 148.0, 138.0])
GRASS = np.array([72.0, 112.0, 58.0])

# location: (block size [m], grid offset [m], drive side: +1 right-hand, -1 left-hand traffic)
LOCATIONS: Dict[str, Tuple[float, float, int]] = {
    'singapore-onenorth': (84.0, 40.0, -1),
    'boston-seaport': (96.0, 52.0, 1),
    'singapore-queenstown': (78.0, 36.0, -1),
    'singapore-hollandvillage': (90.0, 46.0, -1),
}


def stable_seed(*parts) -> int:
    """A 63-bit seed from any printable parts (same on every machine and Python run)."""
    return int(hashlib.md5('/'.join(str(p) for p in parts).encode()).hexdigest()[:15], 16)


@dataclass(frozen=True)
class Building:
    """An axis-aligned building: centre (x, y), length along x, width along y, height, RGB colour."""
    x: float
    y: float
    length: float
    width: float
    height: float
    color: Tuple[int, int, int]


def _wrap_blur(tile: np.ndarray, sigma: float) -> np.ndarray:
    pad = int(3 * sigma) + 1
    big = np.pad(tile, pad, mode='wrap')
    big = cv2.GaussianBlur(big, (0, 0), sigma)
    return big[pad:-pad, pad:-pad]


class City:
    """The street grid of one location. ``ground(x, y, footprint)`` is its texture, ``map_mask()`` its map."""

    def __init__(self, location: str):
        if location not in LOCATIONS:
            raise ValueError(f'unknown location {location!r}; known: {sorted(LOCATIONS)}')
        self.location = location
        self.block, self.offset, self.drive_side = LOCATIONS[location]
        rng = np.random.default_rng(stable_seed('city-texture', location))
        fine = _wrap_blur(rng.standard_normal((TEXTURE_SIZE, TEXTURE_SIZE)).astype(np.float32), 0.7)
        coarse = _wrap_blur(rng.standard_normal((TEXTURE_SIZE, TEXTURE_SIZE)).astype(np.float32), 10.0)
        base = fine / fine.std() + 1.5 * coarse / coarse.std()
        base = (base / base.std()).astype(np.float32)
        # Pre-filtered levels: level k is averaged over ~2^k texels (used where a pixel covers that much ground).
        self.noise_levels = np.stack([base] + [_wrap_blur(base, 2.0 ** k) for k in range(1, 6)])
        # The street pattern repeats every block in x and y: tabulate one block, then box-filter it per level.
        n = int(round(self.block / BLOCK_CELL))
        c = (np.arange(n, dtype=np.float64) + 0.5) * BLOCK_CELL + self.offset
        gx, gy = np.meshgrid(c, c)
        rgb, inten = self.ground_exact(gx.ravel(), gy.ravel(), np.full(gx.size, BLOCK_CELL))
        self.block_intensity = inten.reshape(n, n).astype(np.float32)
        levels = [rgb.reshape(n, n, 3).astype(np.float32)]
        while len(levels) < 7 and levels[-1].shape[0] > 16:
            m = levels[-1].shape[0] // 2
            levels.append(cv2.resize(levels[-1], (m, m), interpolation=cv2.INTER_AREA))
        self.block_levels = levels

    # -- street coordinates -------------------------------------------------------------------------------------
    def street_offsets(self, x: np.ndarray, y: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
        """Signed offsets (ux, uy) of points from the nearest street centre line along y (ux) and along x (uy)."""
        half = self.block / 2.0
        x, y = np.asarray(x), np.asarray(y)
        ux = np.mod(x - x.dtype.type(self.offset - half), x.dtype.type(self.block)) - x.dtype.type(half)
        uy = np.mod(y - y.dtype.type(self.offset - half), y.dtype.type(self.block)) - y.dtype.type(half)
        return ux, uy

    def street_line(self, k: int) -> float:
        """Coordinate of the k-th street centre line (same for x and y)."""
        return self.offset + k * self.block

    def street_index_range(self, lo: float, hi: float) -> range:
        """Indices k of the street lines with lo <= street_line(k) <= hi."""
        return range(int(np.ceil((lo - self.offset) / self.block)), int(np.floor((hi - self.offset) / self.block)) + 1)

    def lane_offset(self, direction_sign: int, kind: str = 'drive') -> float:
        """Offset (along the street's left normal) of the lane used by traffic heading ``direction_sign`` (+-1)
        along the street's axis: driving lane or parking lane; negative = right of the travel direction."""
        mag = LANE_CENTER if kind == 'drive' else PARK_CENTER
        return -self.drive_side * mag * direction_sign

    # -- appearance ----------------------------------------------------------------------------------------------
    def ground(self, x: np.ndarray, y: np.ndarray, footprint: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
        """Ground colour and lidar intensity at world points, looked up in the pre-filtered block texture.

        Args:
            x, y: ``[N]`` world coordinates (m).
            footprint: ``[N]`` ground length one pixel covers there (m), selects the texture level (mip-map).
        Returns:
            ``(rgb [N, 3] float32 in 0..255, intensity [N] float32)``.
        """
        x, y = np.asarray(x), np.asarray(y)
        ax = np.mod(x - x.dtype.type(self.offset), x.dtype.type(self.block))
        ay = np.mod(y - y.dtype.type(self.offset), y.dtype.type(self.block))
        f = np.asarray(footprint)
        level = np.clip(np.floor(np.log2(np.maximum(f, 1e-6) / BLOCK_CELL)), 0, len(self.block_levels) - 1)
        level = level.astype(np.int64)
        rgb = np.empty(x.shape + (3,), dtype=np.float32)
        for lv in np.unique(level):
            m = level == lv
            tex = self.block_levels[lv]
            n = tex.shape[0]
            ix = np.minimum((ax[m] * (n / self.block)).astype(np.int64), n - 1)
            iy = np.minimum((ay[m] * (n / self.block)).astype(np.int64), n - 1)
            rgb[m] = tex[iy, ix]
        n0 = self.block_intensity.shape[0]
        intensity = self.block_intensity[np.minimum((ay * (n0 / self.block)).astype(np.int64), n0 - 1),
                                         np.minimum((ax * (n0 / self.block)).astype(np.int64), n0 - 1)]
        nlevel = np.clip(np.log2(np.maximum(f, 1e-6) / TEXTURE_CELL), 0, len(self.noise_levels) - 1).astype(np.int64)
        nx = np.mod((ax / TEXTURE_CELL).astype(np.int64), TEXTURE_SIZE)
        ny = np.mod((ay / TEXTURE_CELL).astype(np.int64), TEXTURE_SIZE)
        rgb *= (1.0 + 0.12 * self.noise_levels[nlevel, ny, nx])[:, None]
        return np.clip(rgb, 0, 255), intensity

    def ground_intensity(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """Lidar intensity ``[N]`` of the ground at world points (the tabulated block pattern)."""
        x, y = np.asarray(x), np.asarray(y)
        n0 = self.block_intensity.shape[0]
        ix = np.minimum((np.mod(x - self.offset, self.block) * (n0 / self.block)).astype(np.int64), n0 - 1)
        iy = np.minimum((np.mod(y - self.offset, self.block) * (n0 / self.block)).astype(np.int64), n0 - 1)
        return self.block_intensity[iy, ix]

    def ground_exact(self, x: np.ndarray, y: np.ndarray, footprint: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
        """Ground colour (without noise) and lidar intensity at world points, evaluated analytically.

        Args:
            x, y: ``[N]`` world coordinates (m).
            footprint: ``[N]`` ground length one pixel covers there (m); thin markings are blended by coverage
                and the noise is taken from a pre-filtered level, so distant ground does not alias.
        Returns:
            ``(rgb [N, 3] float32 in 0..255, intensity [N] float32)``.
        """
        ux, uy = self.street_offsets(x, y)
        dx, dy = np.abs(ux), np.abs(uy)
        d = np.minimum(dx, dy)
        road = d < ROAD_HALF
        walk = (~road) & (d < SIDEWALK_OUT)
        rgb = np.empty(x.shape + (3,), dtype=np.float32)
        rgb[:] = GRASS
        rgb[road] = ASPHALT
        rgb[walk] = SIDEWALK
        f = np.maximum(footprint, 1e-3)

        def line(dist: np.ndarray, width: float) -> np.ndarray:
            half = np.maximum(width, f) / 2.0
            return np.where(np.abs(dist) < half, np.minimum(1.0, width / f), 0.0)

        # Lane markings on the street segments (not inside intersections), zebra crossings before intersections.
        ax = np.asarray(x) - np.asarray(x).dtype.type(self.offset)
        ay = np.asarray(y) - np.asarray(y).dtype.type(self.offset)
        on_h = (dy < ROAD_HALF) & (dx > SIDEWALK_OUT)  # street along x, outside the intersection
        on_v = (dx < ROAD_HALF) & (dy > SIDEWALK_OUT)
        dash_x = np.mod(ax, 6.0) < 3.0
        dash_y = np.mod(ay, 6.0) < 3.0
        mark = np.zeros_like(d, dtype=np.float32)
        mark = np.maximum(mark, on_h * np.maximum(line(uy, 0.15) * dash_x, line(dy - LANE_EDGE, 0.15)))
        mark = np.maximum(mark, on_v * np.maximum(line(ux, 0.15) * dash_y, line(dx - LANE_EDGE, 0.15)))
        zebra_h = (dy < ROAD_HALF - 0.5) & (dx > SIDEWALK_OUT + 0.5) & (dx < SIDEWALK_OUT + 3.5)
        zebra_v = (dx < ROAD_HALF - 0.5) & (dy > SIDEWALK_OUT + 0.5) & (dy < SIDEWALK_OUT + 3.5)
        zebra_w = np.clip(0.6 / f, 0.0, 1.0)  # stripes 0.6 m wide every 1.2 m fade into grey far away
        zebra = (zebra_h * np.where(np.mod(ay, 1.2) < 0.6, 1.0, 0.0)
                 + zebra_v * np.where(np.mod(ax, 1.2) < 0.6, 1.0, 0.0))
        zebra = zebra * zebra_w + (zebra_h | zebra_v) * (1.0 - zebra_w) * 0.5
        mark = np.maximum(mark, zebra.astype(np.float32))
        # Sidewalk slab joints.
        joints = walk * np.maximum(line(np.mod(ax + 0.75, 1.5) - 0.75, 0.06), line(np.mod(ay + 0.75, 1.5) - 0.75, 0.06))

        rgb *= (1.0 - 0.35 * joints)[:, None].astype(np.float32)
        rgb += (MARKING - rgb) * mark[:, None]
        intensity = np.where(road, 12.0, np.where(walk, 24.0, 6.0)) + 70.0 * mark
        return np.clip(rgb, 0, 255).astype(np.float32), intensity.astype(np.float32)

    def _block_range(self, lo: float, hi: float) -> range:
        """Indices i of the blocks [street_line(i), street_line(i + 1)] overlapping [lo, hi]."""
        return range(int(np.floor((lo - self.offset) / self.block)), int(np.floor((hi - self.offset) / self.block)) + 1)

    def buildings(self, xmin: float, xmax: float, ymin: float, ymax: float) -> List[Building]:
        """Buildings on the blocks that overlap the rectangle; each block holds up to 2x2 lots, fixed per city."""
        out = []
        kx, ky = self._block_range(xmin, xmax), self._block_range(ymin, ymax)
        inner = self.block - 2 * BUILDING_SETBACK
        lot = (inner - 4.0) / 2.0
        for i in kx:
            for j in ky:
                rng = np.random.default_rng(stable_seed('block', self.location, i, j))
                x0 = self.street_line(i) + BUILDING_SETBACK
                y0 = self.street_line(j) + BUILDING_SETBACK
                for a in range(2):
                    for b in range(2):
                        keep, h, g = rng.random(), rng.uniform(6.0, 32.0), rng.uniform(0.55, 1.0)
                        shrink = rng.uniform(0.0, 4.0, size=2)
                        tone = rng.integers(0, 3)
                        if keep < 0.15:
                            continue  # an empty lot (plaza)
                        base = ((150, 140, 128), (128, 132, 138), (170, 160, 140))[tone]
                        color = tuple(int(c * g) for c in base)
                        cx = x0 + lot / 2 + a * (lot + 4.0)
                        cy = y0 + lot / 2 + b * (lot + 4.0)
                        out.append(Building(cx, cy, lot - shrink[0], lot - shrink[1], h, color))
        return out

    def map_mask(self) -> np.ndarray:
        """Drivable-area mask [H, W] uint8 (255 road) at MAP_RESOLUTION over [0, MAP_EXTENT]^2, row 0 = max y."""
        n = int(round(MAP_EXTENT / MAP_RESOLUTION))
        mask = np.zeros((n, n), dtype=np.uint8)
        for k in self.street_index_range(-ROAD_HALF, MAP_EXTENT + ROAD_HALF):
            c = self.street_line(k)
            lo, hi = int(round((c - ROAD_HALF) / MAP_RESOLUTION)), int(round((c + ROAD_HALF) / MAP_RESOLUTION))
            mask[:, max(lo, 0):max(hi, 0)] = 255  # street along y: columns
            mask[n - min(max(hi, 0), n):n - min(max(lo, 0), n), :] = 255  # street along x: rows (y flipped)
        return mask
