"""The objects of one scene: parked, standing and moving actors of all ten detection classes along the streets.

Moving actors drive/walk/ride in straight lines at constant speed (>= 1 m/s, so every moving annotation is
far above mmdet3d's 0.2 m/s attribute threshold); still actors never move. Actors are placed lane by lane
around the ego route, then any that would ever overlap the ego car, another actor or the road furniture during
the scene is dropped.
"""
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from .catalog import DETECTION_CLASSES, OBJECT_CLASSES, ObjectClass, Part
from .city import LANE_EDGE, PARK_CENTER, SIDEWALK_MID, SIDEWALK_OUT, City
from .route import EgoTrajectory

EGO_LENGTH, EGO_WIDTH = 4.6, 1.9
# m (the devkit evaluates up to 50 m): instances are annotated while this close to the ego (contiguously)
ANNOTATION_RANGE = 60.0
ROAD_EDGE_IN = 6.7  # m from the centre line: cones just inside the road edge
CHECK_STEP = 0.1  # s between the times at which overlaps are tested

# (class, weight, own speed range m/s) per lane kind
_DRIVE_MIX = (('car', 0.72, ()), ('truck', 0.1, ()), ('bus', 0.07, ()), ('motorcycle', 0.06, ()),
              ('trailer', 0.03, ()), ('construction_vehicle', 0.02, (2.0, 5.0)))  # lane flow speed unless given
_PARK_MIX = (('car', 0.78), ('truck', 0.08), ('trailer', 0.04), ('construction_vehicle', 0.04), ('bus', 0.03),
             ('motorcycle', 0.03))


@dataclass
class Actor:
    """One object instance: class, box size [w, l, h], start position (t = 0), velocity, yaw, look."""
    name: str
    size_wlh: Tuple[float, float, float]
    xy0: np.ndarray  # [2] world position at t = 0
    velocity: np.ndarray  # [2] m/s (zero when still)
    yaw: float
    tint: float = 1.0  # brightness factor of this instance's colours
    index: int = 0  # position in the scene's actor list (set by the scene)

    @property
    def moving(self) -> bool:
        return bool(np.hypot(*self.velocity) > 0)

    @property
    def cls(self) -> ObjectClass:
        return OBJECT_CLASSES[self.name]

    @property
    def parts(self) -> Tuple[Part, ...]:
        return self.cls.parts_for(self.moving)

    def position(self, t: np.ndarray) -> np.ndarray:
        """World (x, y) ``[N, 2]`` at times ``[N]`` (s)."""
        t = np.atleast_1d(np.asarray(t, dtype=np.float64))
        return self.xy0[None, :] + t[:, None] * self.velocity[None, :]


def _choose(rng: np.random.Generator, mix: Sequence[tuple]) -> tuple:
    w = np.array([m[1] for m in mix])
    return mix[int(rng.choice(len(mix), p=w / w.sum()))]


def _size(rng: np.random.Generator, name: str, moving: bool) -> Tuple[float, float, float]:
    cls = OBJECT_CLASSES[name]
    w, l, h = cls.size_wlh
    if moving and cls.moving_height:
        h = cls.moving_height
    j = rng.uniform(0.9, 1.1, size=3)
    return float(w * j[0]), float(l * j[1]), float(h * j[2])


class _Street:
    """A street centre line: axis 0 = along x (at y = coord), 1 = along y (at x = coord)."""

    def __init__(self, axis: int, coord: float, lo: float, hi: float):
        self.axis, self.coord, self.lo, self.hi = axis, coord, lo, hi

    def point(self, along: float, offset: float) -> np.ndarray:
        """World point at ``along`` on the street and ``offset`` along the street axis' left normal."""
        return np.array([along, self.coord + offset]) if self.axis == 0 else np.array([self.coord - offset, along])

    def heading(self, sign: int) -> float:
        """Yaw of travel in the +axis (sign=1) or -axis (sign=-1) direction."""
        base = 0.0 if self.axis == 0 else np.pi / 2
        return base if sign > 0 else base + np.pi

    def unit(self, sign: int) -> np.ndarray:
        return sign * (np.array([1.0, 0.0]) if self.axis == 0 else np.array([0.0, 1.0]))


class ScenePopulator:
    """Places actors lane by lane on the streets within ``radius`` of the ego route."""

    def __init__(self, city: City, ego: EgoTrajectory, times: np.ndarray, rng: np.random.Generator,
                 radius: float = 80.0):
        self.city, self.ego, self.times, self.rng = city, ego, np.asarray(times, dtype=np.float64), rng
        self.check_times = np.arange(self.times[0] - 0.5, self.times[-1] + 0.5 + CHECK_STEP / 2, CHECK_STEP)
        ego_xy, ego_yaw = ego.pose(self.check_times)
        self.ego_xy, self.ego_yaw = ego_xy, ego_yaw
        key_xy, _ = ego.pose(self.times)
        self.key_xy = key_xy
        lo = key_xy.min(0) - radius
        hi = key_xy.max(0) + radius
        along_x = [_Street(0, city.street_line(k), lo[0], hi[0]) for k in city.street_index_range(lo[1], hi[1])]
        along_y = [_Street(1, city.street_line(k), lo[1], hi[1]) for k in city.street_index_range(lo[0], hi[0])]
        self.streets = along_x + along_y
        self.actors: List[Actor] = []
        self.lane_speed: Dict[tuple, float] = {}
        # Footprints: moving ones over check_times (centres [T, 2], yaws [T]), still ones once; half (length, width).
        self._moving = [(ego_xy, ego_yaw, np.array([EGO_LENGTH / 2 + 1.5, EGO_WIDTH / 2 + 0.8]))]
        self._still: List[Tuple[np.ndarray, float, np.ndarray]] = []

    # -- acceptance ---------------------------------------------------------------------------------------------
    def _near_route(self, actor: Actor) -> bool:
        d = np.linalg.norm(actor.position(self.times) - self.key_xy, axis=1)
        return bool(d.min() < ANNOTATION_RANGE)

    @staticmethod
    def _overlap(xy_a: np.ndarray, yaw_a: np.ndarray, half_a: np.ndarray,
                 xy_b: np.ndarray, yaw_b: np.ndarray, half_b: np.ndarray) -> bool:
        """Separating-axis test of oriented rectangles, broadcast over leading dims ([..., 2] centres, [...] yaws,
        [..., 2] half length/width); True if any pair overlaps."""
        ua = np.stack([np.cos(yaw_a), np.sin(yaw_a)], -1)
        va = np.stack([-np.sin(yaw_a), np.cos(yaw_a)], -1)
        ub = np.stack([np.cos(yaw_b), np.sin(yaw_b)], -1)
        vb = np.stack([-np.sin(yaw_b), np.cos(yaw_b)], -1)
        delta = xy_b - xy_a
        reach = np.linalg.norm(half_a, axis=-1) + np.linalg.norm(half_b, axis=-1)
        close = np.linalg.norm(delta, axis=-1) < reach
        if not close.any():
            return False
        sep = ~close
        for axis in (ua, va, ub, vb):
            ra = half_a[..., 0] * np.abs((axis * ua).sum(-1)) + half_a[..., 1] * np.abs((axis * va).sum(-1))
            rb = half_b[..., 0] * np.abs((axis * ub).sum(-1)) + half_b[..., 1] * np.abs((axis * vb).sum(-1))
            sep = sep | (np.abs((delta * axis).sum(-1)) > ra + rb)
        return bool((~sep).any())

    def _collides(self, actor: Actor, half: np.ndarray) -> bool:
        """Whether the actor's footprint ever overlaps an accepted footprint (or the ego) at a check time."""
        t = self.check_times
        if actor.moving:
            xy, yaw = actor.position(t), np.full(len(t), actor.yaw)
        else:
            xy, yaw = actor.xy0[None], np.array([actor.yaw])
        if self._still:
            sxy = np.stack([s[0] for s in self._still])[:, None]  # [S, 1, 2]
            syaw = np.array([s[1] for s in self._still])[:, None]
            shalf = np.stack([s[2] for s in self._still])[:, None]
            if self._overlap(xy[None], yaw[None], half[None, None], sxy, syaw, shalf):
                return True
        mxy = np.stack([m[0] for m in self._moving])  # [M, T, 2]
        myaw = np.stack([m[1] for m in self._moving])
        mhalf = np.stack([m[2] for m in self._moving])[:, None]
        return self._overlap(xy[None], yaw[None], half[None, None], mxy, myaw, mhalf)

    def try_add(self, actor: Actor, margin: float = 0.3) -> bool:
        """Accept the actor if it comes near the route and never overlaps anything accepted so far."""
        if not self._near_route(actor):
            return False
        half = np.array([actor.size_wlh[1] / 2 + margin, actor.size_wlh[0] / 2 + margin])
        if self._collides(actor, half):
            return False
        actor.index = len(self.actors)
        self.actors.append(actor)
        if actor.moving:
            self._moving.append((actor.position(self.check_times), np.full(len(self.check_times), actor.yaw), half))
        else:
            self._still.append((actor.xy0, actor.yaw, half))
        return True

    # -- spawning -----------------------------------------------------------------------------------------------
    def _in_intersection(self, street: _Street, along: float, clearance: float) -> bool:
        ux, _ = self.city.street_offsets(np.array([along]), np.array([0.0]))
        return bool(abs(ux[0]) < SIDEWALK_OUT + clearance)

    def _make(self, name: str, street: _Street, along: float, offset: float, sign: int, speed: float,
              yaw_extra: float = 0.0) -> Actor:
        moving = speed > 0
        size = _size(self.rng, name, moving)
        yaw = street.heading(sign) + yaw_extra
        vel = street.unit(sign) * speed
        xy0 = street.point(along, offset) - vel * 0.0
        return Actor(name, size, xy0, vel, float(np.arctan2(np.sin(yaw), np.cos(yaw))),
                     tint=float(self.rng.uniform(0.8, 1.1)))

    def spawn(self, lane: str, street: _Street, along: float, name: Optional[str] = None) -> Optional[Actor]:
        """One candidate actor for a lane kind at ``along`` on ``street`` (class drawn from the lane's mix)."""
        rng, city = self.rng, self.city
        sign = 1 if rng.random() < 0.5 else -1
        if lane == 'drive':
            entry = _choose(rng, _DRIVE_MIX) if name is None else next(m for m in _DRIVE_MIX if m[0] == name)
            key = (street.axis, street.coord, sign)
            if key not in self.lane_speed:  # one flow speed per lane, so traffic rarely runs into itself
                self.lane_speed[key] = float(rng.uniform(5.0, 11.0))
            speed = self.lane_speed[key] * float(rng.uniform(0.97, 1.03))
            if entry[0] == 'construction_vehicle':
                speed = float(rng.uniform(*entry[2]))
            off = city.lane_offset(sign, 'drive') + rng.uniform(-0.3, 0.3)
            return self._make(entry[0], street, along, off, sign, speed, rng.uniform(-0.03, 0.03))
        if lane == 'park':
            if self._in_intersection(street, along, 3.0):
                return None
            entry = _choose(rng, _PARK_MIX) if name is None else (name, 1.0)
            off = city.lane_offset(sign, 'park') + rng.uniform(-0.4, 0.4)
            return self._make(entry[0], street, along, off, sign, 0.0, rng.uniform(-0.08, 0.08))
        if lane == 'bike':
            off = city.lane_offset(sign, 'park') * rng.uniform(0.85, 1.05)
            return self._make('bicycle', street, along, off, sign, float(rng.uniform(3.0, 6.5)))
        if lane == 'walk':
            off = sign * SIDEWALK_MID + rng.uniform(-1.2, 1.2)
            walk_sign = 1 if rng.random() < 0.5 else -1
            if name == 'pedestrian_still' or (name is None and rng.random() < 0.4):
                return self._make('pedestrian', street, along, off, walk_sign, 0.0, rng.uniform(-np.pi, np.pi))
            return self._make('pedestrian', street, along, off, walk_sign, float(rng.uniform(1.0, 1.8)))
        if lane == 'parked_bike':
            off = sign * (SIDEWALK_OUT - 0.5)
            cls = 'bicycle' if (name == 'bicycle' or (name is None and rng.random() < 0.6)) else 'motorcycle'
            return self._make(cls, street, along, off, 1, 0.0, np.pi / 2 + rng.uniform(-0.2, 0.2))
        raise ValueError(f'unknown lane kind {lane!r}')

    def construction_zone(self, street: _Street, along: float, length: float) -> None:
        """A row of barriers in a parking lane fenced off by cones along the lane edge."""
        if self._in_intersection(street, along, 3.0) or self._in_intersection(street, along + length, 3.0):
            return
        side = 1 if self.rng.random() < 0.5 else -1
        park = side * PARK_CENTER
        for a in np.arange(along, along + length, 2.7):
            b = self._make('barrier', street, float(a), park + side * 0.6, 1, 0.0, np.pi / 2)
            self.try_add(b, margin=0.05)
        for a in np.arange(along - 2.0, along + length + 2.0, 3.0):
            c = self._make('traffic_cone', street, float(a), side * (LANE_EDGE + 0.35), 1, 0.0,
                           self.rng.uniform(-np.pi, np.pi))
            self.try_add(c, margin=0.05)
        if self.rng.random() < 0.5:
            v = self._make('construction_vehicle', street, along + length / 2, park - side * 0.3, 1, 0.0,
                           0.0 if self.rng.random() < 0.5 else np.pi)
            self.try_add(v)

    def populate(self, densities: Dict[str, float]) -> List[Actor]:
        """Fill every street near the route. ``densities``: lane kind -> metres per candidate."""
        rng = self.rng
        for street in self.streets:
            span = street.hi - street.lo
            if rng.random() < 0.35:
                zl = float(rng.uniform(10.0, 22.0))
                self.construction_zone(street, float(rng.uniform(street.lo, street.hi - zl)), zl)
            for lane in ('drive', 'park', 'bike', 'walk', 'parked_bike'):
                n = int(rng.poisson(span / densities[lane]))
                for along in np.sort(rng.uniform(street.lo, street.hi, size=n)):
                    actor = self.spawn(lane, street, float(along))
                    if actor is not None:
                        self.try_add(actor)
            n_cones = int(rng.poisson(span / densities['cone']))
            for along in rng.uniform(street.lo, street.hi, size=n_cones):
                side = 1 if rng.random() < 0.5 else -1
                off = side * float(rng.choice([LANE_EDGE + 0.35, SIDEWALK_OUT - 0.4, ROAD_EDGE_IN]))
                self.try_add(self._make('traffic_cone', street, float(along), off, 1, 0.0, rng.uniform(-3, 3)), 0.05)
        self.ensure_all_classes()
        return self.actors

    def ensure_all_classes(self, radius: float = 45.0, tries: int = 60) -> None:
        """Add actors of any detection class missing within ``radius`` of the ego's first position."""
        lanes = {'car': 'drive', 'truck': 'park', 'trailer': 'park', 'bus': 'drive',
                 'construction_vehicle': 'park', 'bicycle': 'bike', 'motorcycle': 'drive', 'pedestrian': 'walk'}
        start = self.key_xy[0]
        near = [s for s in self.streets if abs(s.coord - start[1 - s.axis]) < radius]
        for name in DETECTION_CLASSES:
            def present():
                return any(a.name == name and np.linalg.norm(a.xy0 - start) < radius for a in self.actors)
            for _ in range(tries):
                if present() or not near:
                    break
                street = near[int(self.rng.integers(0, len(near)))]
                along = float(start[street.axis] + self.rng.uniform(-radius + 8, radius - 8))
                if name in ('barrier', 'traffic_cone'):
                    self.construction_zone(street, along, float(self.rng.uniform(8.0, 14.0)))
                    continue
                actor = self.spawn(lanes[name], street, along, name)
                if actor is not None and actor.name == name:
                    self.try_add(actor)


DEFAULT_DENSITIES = {'drive': 30.0, 'park': 8.0, 'bike': 140.0, 'walk': 11.0, 'parked_bike': 70.0, 'cone': 70.0}


def populate_scene(city: City, ego: EgoTrajectory, times: np.ndarray, rng: np.random.Generator,
                   densities: Optional[Dict[str, float]] = None) -> List[Actor]:
    """All actors of a scene (see module docstring); ``times`` are the keyframe times (s)."""
    pop = ScenePopulator(city, ego, times, rng)
    return pop.populate(DEFAULT_DENSITIES if densities is None else densities)
