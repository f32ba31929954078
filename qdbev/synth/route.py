"""The ego car's drive: a lane-following route through the street grid and a smooth speed profile.

The route is a chain of straight segments and 90-degree fillet arcs in the ego's driving lane. The trajectory
gives the ego pose, ego-frame velocity/acceleration and yaw rate at any time, from which the ego_pose table and
the CAN-bus 'pose' messages (20 Hz) are sampled.
"""
from dataclasses import dataclass
from typing import List, Tuple

import numpy as np

from .city import MAP_EXTENT, City

TURN_RADIUS = 8.0
CAN_BUS_RATE = 20.0  # Hz of nuScenes' CAN-bus 'pose' messages


@dataclass(frozen=True)
class _Line:
    start: np.ndarray  # [2]
    direction: np.ndarray  # [2] unit
    length: float


@dataclass(frozen=True)
class _Arc:
    center: np.ndarray  # [2]
    radius: float
    angle0: float  # polar angle of the start point about the centre
    turn: float  # +1 left (counter-clockwise), -1 right
    length: float


class LanePath:
    """A path of lines and arcs parametrised by arc length s (m)."""

    def __init__(self, pieces: List[object]):
        self.pieces = pieces
        self.starts = np.cumsum([0.0] + [p.length for p in pieces])

    @property
    def length(self) -> float:
        return float(self.starts[-1])

    def evaluate(self, s: np.ndarray) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Position ``[N, 2]``, heading ``[N]`` (rad) and curvature ``[N]`` (1/m, + = left) at arc lengths ``[N]``.
        Arc lengths outside the path extend its first/last straight piece."""
        s = np.atleast_1d(np.asarray(s, dtype=np.float64))
        idx = np.clip(np.searchsorted(self.starts, s, side='right') - 1, 0, len(self.pieces) - 1)
        pos = np.zeros((s.size, 2))
        yaw = np.zeros(s.size)
        kappa = np.zeros(s.size)
        for i, piece in enumerate(self.pieces):
            m = idx == i
            if not m.any():
                continue
            u = s[m] - self.starts[i]
            if isinstance(piece, _Line):
                pos[m] = piece.start + u[:, None] * piece.direction
                yaw[m] = np.arctan2(piece.direction[1], piece.direction[0])
            else:
                ang = piece.angle0 + piece.turn * u / piece.radius
                pos[m] = piece.center + piece.radius * np.stack([np.cos(ang), np.sin(ang)], axis=1)
                yaw[m] = ang + piece.turn * np.pi / 2
                kappa[m] = piece.turn / piece.radius
        return pos, np.arctan2(np.sin(yaw), np.cos(yaw)), kappa


def lane_route(city: City, rng: np.random.Generator, length: float) -> LanePath:
    """A random route of at least ``length`` metres along the driving lanes, starting near the map centre and
    staying inside the map; turns at intersections with 90-degree fillets of TURN_RADIUS."""
    centre = MAP_EXTENT / 2
    ks = list(city.street_index_range(centre - 60, centre + 60))
    axis = int(rng.integers(0, 2))
    heading = np.array([1.0, 0.0]) if axis == 0 else np.array([0.0, 1.0])
    heading = heading * (1 if rng.random() < 0.5 else -1)
    line = city.street_line(int(rng.choice(ks)))
    cross = city.street_line(int(rng.choice(ks)))
    first_node = np.array([cross, line]) if axis == 0 else np.array([line, cross])
    d0 = rng.uniform(TURN_RADIUS + 6, city.block - TURN_RADIUS - 12)
    start = first_node + heading * d0
    nodes = [start]
    dirs = [heading]
    node = first_node + heading * city.block  # the next intersection ahead
    total = city.block - d0
    while total < length:
        options = [('straight', heading), ('left', np.array([-heading[1], heading[0]])),
                   ('right', np.array([heading[1], -heading[0]]))]
        probs = [0.7, 0.15, 0.15]
        choice = int(rng.choice(3, p=probs))
        new = options[choice][1]
        if not np.all((node + new * city.block > 40) & (node + new * city.block < MAP_EXTENT - 40)):
            inside = [o[1] for o in options if np.all((node + o[1] * city.block > 40)
                                                      & (node + o[1] * city.block < MAP_EXTENT - 40))]
            new = inside[int(rng.integers(0, len(inside)))]
        nodes.append(node)
        dirs.append(new)
        heading = new
        node = node + heading * city.block
        total += city.block
    nodes.append(node)
    return _offset_and_fillet(nodes, dirs, city)


def _offset_and_fillet(nodes: List[np.ndarray], dirs: List[np.ndarray], city: City) -> LanePath:
    """Shift the centre-line polyline into the driving lane and round its corners."""
    off = -city.drive_side * 1.75  # along each segment's left normal

    def left(d):
        return np.array([-d[1], d[0]])

    pts = [nodes[0] + off * left(dirs[0])]
    for i in range(1, len(nodes) - 1):
        d1, d2 = dirs[i - 1], dirs[i]
        if np.allclose(d1, d2):
            continue
        pts.append(nodes[i] + off * (left(d1) + left(d2)))
    pts.append(nodes[-1] + off * left(dirs[-1]))
    # Keep only the corners (drop straight-through nodes) and fillet them.
    pieces: List[object] = []
    cur = pts[0]
    corner_dirs = [dirs[0]] + [dirs[i] for i in range(1, len(nodes) - 1) if not np.allclose(dirs[i - 1], dirs[i])]
    for k in range(1, len(pts) - 1):
        d1, d2 = corner_dirs[k - 1], corner_dirs[k]
        t1 = pts[k] - TURN_RADIUS * d1
        t2 = pts[k] + TURN_RADIUS * d2
        pieces.append(_Line(cur, d1, float(np.dot(t1 - cur, d1))))
        turn = float(np.sign(d1[0] * d2[1] - d1[1] * d2[0]))
        center = t1 + TURN_RADIUS * turn * left(d1)
        a0 = float(np.arctan2(t1[1] - center[1], t1[0] - center[0]))
        pieces.append(_Arc(center, TURN_RADIUS, a0, turn, TURN_RADIUS * np.pi / 2))
        cur = t2
    d = corner_dirs[-1]
    pieces.append(_Line(cur, d, float(np.dot(pts[-1] - cur, d))))
    return LanePath(pieces)


class EgoTrajectory:
    """Ego motion along a LanePath: speed v(t) = v0 (1 + a sin(w t + phi)), arc length s(t) = s0 + integral v."""

    def __init__(self, path: LanePath, v0: float, amp: float, omega: float, phase: float, s0: float):
        self.path, self.v0, self.amp, self.omega, self.phase, self.s0 = path, v0, amp, omega, phase, s0

    def arc_length(self, t: np.ndarray) -> np.ndarray:
        t = np.asarray(t, dtype=np.float64)
        return self.s0 + self.v0 * t - self.v0 * self.amp / self.omega * (
            np.cos(self.omega * t + self.phase) - np.cos(self.phase))

    def speed(self, t: np.ndarray) -> np.ndarray:
        return self.v0 * (1.0 + self.amp * np.sin(self.omega * np.asarray(t, dtype=np.float64) + self.phase))

    def accel(self, t: np.ndarray) -> np.ndarray:
        return self.v0 * self.amp * self.omega * np.cos(self.omega * np.asarray(t, dtype=np.float64) + self.phase)

    def pose(self, t: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
        """Ego position ``[N, 2]`` (world, m) and yaw ``[N]`` (rad) at times ``[N]`` (s from the scene start)."""
        pos, yaw, _ = self.path.evaluate(self.arc_length(t))
        return pos, yaw

    def can_bus_pose(self, t: np.ndarray) -> dict:
        """Ego-frame kinematics at times ``[N]``: 'vel' [N, 3], 'accel' [N, 3] (longitudinal, lateral v^2 k, 0)
        and 'rotation_rate' [N, 3] (0, 0, v k)."""
        v = self.speed(t)
        _, _, kappa = self.path.evaluate(self.arc_length(t))
        zeros = np.zeros_like(v)
        return dict(vel=np.stack([v, zeros, zeros], 1),
                    accel=np.stack([self.accel(t), v * v * kappa, zeros], 1),
                    rotation_rate=np.stack([zeros, zeros, v * kappa], 1))


def random_trajectory(city: City, rng: np.random.Generator, duration: float) -> EgoTrajectory:
    """An ego drive of ``duration`` seconds (plus 2 s of CAN-bus margin each side): 8 % of scenes wait still."""
    v0 = 0.0 if rng.random() < 0.08 else float(rng.uniform(3.5, 9.0))
    amp = float(rng.uniform(0.05, 0.2))
    omega = 2 * np.pi / float(rng.uniform(10.0, 20.0))
    phase = float(rng.uniform(0, 2 * np.pi))
    s0 = v0 * 3.0 + 4.0
    path = lane_route(city, rng, s0 + v0 * (1 + amp) * (duration + 3.0) + 30.0)
    return EgoTrajectory(path, v0, amp, omega, phase, s0)
