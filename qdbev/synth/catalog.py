"""What the synthetic world contains: nuScenes categories, attributes, visibility levels and the object classes.

Every object class is a small set of coloured boxes ("parts") in the object's own frame, given as fractions of
the annotation box (x along the length, y along the width, z up from the ground): the parts always lie inside the
annotation box, so what the cameras and the lidar see is what the box encloses.

The attribute of an annotation follows the rule mmdet3d's ``NuScenesMetric`` uses to give attributes to
predictions (``DefaultAttribute`` and the 0.2 m/s speed threshold), so ground truth fed back as predictions
scores AAE = 0.
"""
from dataclasses import dataclass, field
from typing import Dict, List, Tuple

# The 32 categories of nuScenes v1.0 (``category.json`` with the lidarseg ``index``).
CATEGORY_NAMES: Tuple[str, ...] = (
    'noise', 'animal', 'human.pedestrian.adult', 'human.pedestrian.child', 'human.pedestrian.construction_worker',
    'human.pedestrian.personal_mobility', 'human.pedestrian.police_officer', 'human.pedestrian.stroller',
    'human.pedestrian.wheelchair', 'movable_object.barrier', 'movable_object.debris',
    'movable_object.pushable_pullable', 'movable_object.trafficcone', 'static_object.bicycle_rack', 'vehicle.bicycle',
    'vehicle.bus.bendy', 'vehicle.bus.rigid', 'vehicle.car', 'vehicle.construction', 'vehicle.emergency.ambulance',
    'vehicle.emergency.police', 'vehicle.motorcycle', 'vehicle.trailer', 'vehicle.truck', 'flat.driveable_surface',
    'flat.other', 'flat.sidewalk', 'flat.terrain', 'static.manmade', 'static.other', 'static.vegetation',
    'vehicle.ego')

ATTRIBUTES: Tuple[Tuple[str, str], ...] = (
    ('vehicle.moving', 'Vehicle is moving.'),
    ('vehicle.stopped', 'Vehicle, with a driver/rider in/on it, is currently stationary but has an intent to move.'),
    ('vehicle.parked', 'Vehicle is stationary (usually for longer duration) with no immediate intent to move.'),
    ('cycle.with_rider', 'There is someone on the bicycle or motorcycle.'),
    ('cycle.without_rider', 'There is NO rider on the bicycle or motorcycle.'),
    ('pedestrian.sitting_lying_down', 'The human is sitting or lying down.'),
    ('pedestrian.standing', 'The human is standing.'),
    ('pedestrian.moving', 'The human is moving.'),
)

# (token, level, description) exactly as nuScenes' visibility.json.
VISIBILITY: Tuple[Tuple[str, str, str], ...] = (
    ('1', 'v0-40', 'visibility of whole object is between 0 and 40%'),
    ('2', 'v40-60', 'visibility of whole object is between 40 and 60%'),
    ('3', 'v60-80', 'visibility of whole object is between 60 and 80%'),
    ('4', 'v80-100', 'visibility of whole object is between 80 and 100%'),
)

# mmdet3d NuScenesMetric.DefaultAttribute (mmdet3d/evaluation/metrics/nuscenes_metric.py).
DEFAULT_ATTRIBUTE: Dict[str, str] = {
    'car': 'vehicle.parked', 'pedestrian': 'pedestrian.moving', 'trailer': 'vehicle.parked',
    'truck': 'vehicle.parked', 'bus': 'vehicle.moving', 'motorcycle': 'cycle.without_rider',
    'construction_vehicle': 'vehicle.parked', 'bicycle': 'cycle.without_rider', 'barrier': '', 'traffic_cone': '',
}
ATTRIBUTE_SPEED_THRESHOLD = 0.2  # m/s, NuScenesMetric's moving/still split

DETECTION_CLASSES: Tuple[str, ...] = ('car', 'truck', 'trailer', 'bus', 'construction_vehicle', 'bicycle',
                                      'motorcycle', 'pedestrian', 'traffic_cone', 'barrier')


def attribute_for(detection_name: str, speed: float) -> str:
    """Attribute name ('' for none) that mmdet3d's NuScenesMetric assigns to a box of this class and speed (m/s)."""
    if speed > ATTRIBUTE_SPEED_THRESHOLD:
        if detection_name in ('car', 'construction_vehicle', 'bus', 'truck', 'trailer'):
            return 'vehicle.moving'
        if detection_name in ('bicycle', 'motorcycle'):
            return 'cycle.with_rider'
        return DEFAULT_ATTRIBUTE[detection_name]
    if detection_name == 'pedestrian':
        return 'pedestrian.standing'
    if detection_name == 'bus':
        return 'vehicle.stopped'
    return DEFAULT_ATTRIBUTE[detection_name]


@dataclass(frozen=True)
class Part:
    """One coloured box of an object, in fractions of the annotation box: x/y in [-0.5, 0.5], z in [0, 1]."""
    lo: Tuple[float, float, float]
    hi: Tuple[float, float, float]
    color: str  # key into ObjectClass.colors ('main', 'second', ...) or a fixed name of PALETTE


@dataclass(frozen=True)
class ObjectClass:
    """A detection class: nuScenes category, mean size [w, l, h] (m), colours (RGB) and parts (still / moving)."""
    name: str
    category: str
    size_wlh: Tuple[float, float, float]
    colors: Dict[str, Tuple[int, int, int]]
    parts: Tuple[Part, ...]
    moving_parts: Tuple[Part, ...] = field(default=())  # parts when moving (e.g. a rider); default = parts
    moving_height: float = 0.0  # box height when moving (cycles with a rider), 0 = same as still

    def parts_for(self, moving: bool) -> Tuple[Part, ...]:
        return self.moving_parts if (moving and self.moving_parts) else self.parts


PALETTE: Dict[str, Tuple[int, int, int]] = {
    'glass': (38, 44, 56), 'tyre': (22, 22, 24), 'skin': (214, 170, 140), 'white': (236, 236, 232),
    'pants': (40, 48, 90), 'dark': (55, 55, 60),
}


def _wheels(z_top: float, x_in: float = 0.22, x_out: float = 0.42) -> Tuple[Part, ...]:
    """Four tyres under the body: x in +-[x_in, x_out], y in +-[0.36, 0.5], z in [0, z_top]."""
    return tuple(Part((x0, y0, 0.0), (x1, y1, z_top), 'tyre')
                 for x0, x1 in ((-x_out, -x_in), (x_in, x_out)) for y0, y1 in ((-0.5, -0.36), (0.36, 0.5)))


def _stripes(n: int, axis: int, lo: Tuple[float, float, float], hi: Tuple[float, float, float],
             colors: Tuple[str, str]) -> Tuple[Part, ...]:
    parts = []
    for i in range(n):
        a = lo[axis] + (hi[axis] - lo[axis]) * i / n
        b = lo[axis] + (hi[axis] - lo[axis]) * (i + 1) / n
        p_lo, p_hi = list(lo), list(hi)
        p_lo[axis], p_hi[axis] = a, b
        parts.append(Part(tuple(p_lo), tuple(p_hi), colors[i % 2]))
    return tuple(parts)


_CAR = ObjectClass(
    'car', 'vehicle.car', (1.95, 4.62, 1.73), {'main': (200, 36, 40)},
    (Part((-0.5, -0.5, 0.2), (0.5, 0.5, 0.6), 'main'), Part((-0.32, -0.45, 0.6), (0.2, 0.45, 1.0), 'glass'))
    + _wheels(0.2))
_TRUCK = ObjectClass(
    'truck', 'vehicle.truck', (2.51, 6.93, 2.84), {'main': (226, 132, 30), 'second': (214, 206, 186)},
    (Part((0.24, -0.5, 0.14), (0.5, 0.5, 0.62), 'main'), Part((0.24, -0.46, 0.62), (0.44, 0.46, 0.85), 'glass'),
     Part((-0.5, -0.5, 0.14), (0.2, 0.5, 1.0), 'second')) + _wheels(0.14, 0.28, 0.42))
_BUS = ObjectClass(
    'bus', 'vehicle.bus.rigid', (2.94, 10.5, 3.47), {'main': (30, 72, 196)},
    (Part((-0.5, -0.5, 0.1), (0.5, 0.5, 0.55), 'main'), Part((-0.5, -0.5, 0.55), (0.5, 0.5, 0.85), 'glass'),
     Part((-0.5, -0.5, 0.85), (0.5, 0.5, 1.0), 'main')) + _wheels(0.1, 0.3, 0.4))
_TRAILER = ObjectClass(
    'trailer', 'vehicle.trailer', (2.90, 12.29, 3.87), {'main': (112, 168, 186), 'second': (70, 104, 116)},
    (Part((-0.5, -0.5, 0.25), (0.5, 0.5, 1.0), 'main'), Part((-0.45, -0.4, 0.0), (-0.2, 0.4, 0.25), 'second'),
     Part((0.42, -0.1, 0.1), (0.5, 0.1, 0.25), 'second')))
_CONSTRUCTION = ObjectClass(
    'construction_vehicle', 'vehicle.construction', (2.85, 6.47, 3.19),
    {'main': (236, 198, 18), 'second': (150, 120, 14)},
    (Part((-0.5, -0.5, 0.1), (0.12, 0.5, 0.55), 'main'), Part((-0.32, -0.4, 0.55), (0.05, 0.4, 1.0), 'glass'),
     Part((0.12, -0.12, 0.25), (0.5, 0.12, 0.8), 'second'), Part((-0.5, -0.5, 0.0), (0.12, 0.5, 0.1), 'tyre')))
_PEDESTRIAN = ObjectClass(
    'pedestrian', 'human.pedestrian.adult', (0.67, 0.73, 1.77), {'main': (196, 46, 178)},
    (Part((-0.22, -0.35, 0.0), (0.22, 0.35, 0.46), 'pants'), Part((-0.3, -0.5, 0.46), (0.3, 0.5, 0.84), 'main'),
     Part((-0.2, -0.2, 0.86), (0.2, 0.2, 1.0), 'skin')))
_MOTORCYCLE = ObjectClass(
    'motorcycle', 'vehicle.motorcycle', (0.77, 2.11, 1.25), {'main': (128, 40, 170)},
    (Part((-0.5, -0.25, 0.0), (0.5, 0.25, 0.3), 'tyre'), Part((-0.35, -0.45, 0.3), (0.4, 0.45, 0.75), 'main')),
    (Part((-0.5, -0.2, 0.0), (0.5, 0.2, 0.22), 'tyre'), Part((-0.35, -0.4, 0.22), (0.4, 0.4, 0.52), 'main'),
     Part((-0.3, -0.5, 0.52), (0.05, 0.5, 0.88), 'pants'), Part((-0.22, -0.2, 0.88), (0.0, 0.2, 1.0), 'dark')),
    moving_height=1.6)
_BICYCLE = ObjectClass(
    'bicycle', 'vehicle.bicycle', (0.61, 1.70, 1.05), {'main': (30, 170, 70)},
    (Part((-0.5, -0.15, 0.0), (0.5, 0.15, 0.55), 'main'), Part((0.3, -0.5, 0.55), (0.4, 0.5, 0.95), 'dark')),
    (Part((-0.5, -0.15, 0.0), (0.5, 0.15, 0.38), 'main'), Part((-0.25, -0.5, 0.38), (0.15, 0.5, 0.86), 'pants'),
     Part((-0.15, -0.25, 0.86), (0.1, 0.25, 1.0), 'skin')),
    moving_height=1.72)
_CONE = ObjectClass(
    'traffic_cone', 'movable_object.trafficcone', (0.41, 0.41, 1.07), {'main': (255, 112, 10)},
    (Part((-0.5, -0.5, 0.0), (0.5, 0.5, 0.07), 'tyre'), Part((-0.32, -0.32, 0.07), (0.32, 0.32, 0.5), 'main'),
     Part((-0.26, -0.26, 0.5), (0.26, 0.26, 0.68), 'white'), Part((-0.2, -0.2, 0.68), (0.2, 0.2, 1.0), 'main')))
_BARRIER = ObjectClass(
    'barrier', 'movable_object.barrier', (2.49, 0.48, 0.99), {'main': (210, 28, 28)},
    (Part((-0.5, -0.45, 0.0), (0.5, -0.3, 0.15), 'dark'), Part((-0.5, 0.3, 0.0), (0.5, 0.45, 0.15), 'dark'))
    + _stripes(5, 1, (-0.25, -0.5, 0.15), (0.25, 0.5, 1.0), ('main', 'white')))

OBJECT_CLASSES: Dict[str, ObjectClass] = {c.name: c for c in (
    _CAR, _TRUCK, _TRAILER, _BUS, _CONSTRUCTION, _BICYCLE, _MOTORCYCLE, _PEDESTRIAN, _CONE, _BARRIER)}


def part_color(cls: ObjectClass, key: str) -> Tuple[int, int, int]:
    """RGB of a part colour key of a class (class colours first, then the shared palette)."""
    return cls.colors[key] if key in cls.colors else PALETTE[key]


def main_colors() -> Dict[str, Tuple[int, int, int]]:
    """The distinctive RGB colour of every detection class (what its box centre mostly shows)."""
    return {name: c.colors['main'] for name, c in OBJECT_CLASSES.items()}


def category_records(token_of) -> List[dict]:
    """category.json records; ``token_of(name)`` gives each record's token."""
    return [dict(token=token_of(name), name=name, description=f'nuScenes category {name}.', index=i)
            for i, name in enumerate(CATEGORY_NAMES)]


def attribute_records(token_of) -> List[dict]:
    """attribute.json records; ``token_of(name)`` gives each record's token."""
    return [dict(token=token_of(name), name=name, description=desc) for name, desc in ATTRIBUTES]


def visibility_records() -> List[dict]:
    """visibility.json records with the real tokens '1'..'4'."""
    return [dict(description=desc, token=tok, level=level) for tok, level, desc in VISIBILITY]


def visibility_token(fraction: float) -> str:
    """nuScenes visibility token of a visible fraction in [0, 1]: '1' <40 %, '2' <60 %, '3' <80 %, else '4'."""
    if fraction < 0.4:
        return '1'
    if fraction < 0.6:
        return '2'
    if fraction < 0.8:
        return '3'
    return '4'
