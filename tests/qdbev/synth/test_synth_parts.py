"""Unit checks of the generator's pieces against hand-computed numbers."""
import numpy as np
import pytest

from qdbev.synth.catalog import OBJECT_CLASSES, attribute_for, visibility_token
from qdbev.synth.city import City
from qdbev.synth.lidar import LidarSimulator
from qdbev.synth.render import CameraRenderer, PartTable, frame_geometry, sun_direction
from qdbev.synth.rig import build_rig, matrix_quaternion, quaternion_matrix
from qdbev.synth.world import Actor


def test_attribute_rule_and_visibility_levels():
    assert attribute_for('car', 5.0) == 'vehicle.moving' and attribute_for('car', 0.0) == 'vehicle.parked'
    assert attribute_for('bus', 0.0) == 'vehicle.stopped' and attribute_for('bus', 3.0) == 'vehicle.moving'
    assert attribute_for('pedestrian', 1.2) == 'pedestrian.moving'
    assert attribute_for('pedestrian', 0.0) == 'pedestrian.standing'
    assert attribute_for('bicycle', 4.0) == 'cycle.with_rider'
    assert attribute_for('motorcycle', 0.0) == 'cycle.without_rider'
    assert attribute_for('barrier', 0.0) == '' and attribute_for('traffic_cone', 0.0) == ''
    assert [visibility_token(f) for f in (0.0, 0.39, 0.4, 0.59, 0.6, 0.79, 0.8, 1.0)] == list('11223344')


def test_parts_lie_inside_their_box_and_sizes_are_nuscenes_like():
    for cls in OBJECT_CLASSES.values():
        for p in cls.parts + cls.moving_parts:
            assert -0.5 <= p.lo[0] < p.hi[0] <= 0.5 and -0.5 <= p.lo[1] < p.hi[1] <= 0.5
            assert 0.0 <= p.lo[2] < p.hi[2] <= 1.0
    w, l, h = OBJECT_CLASSES['car'].size_wlh
    assert (w, l, h) == (1.95, 4.62, 1.73)  # nuScenes mean car size [w, l, h]
    assert OBJECT_CLASSES['barrier'].size_wlh[0] > OBJECT_CLASSES['barrier'].size_wlh[1]  # barriers are wide


def test_rig_geometry():
    rig = build_rig(0.25)
    front, fr = rig[0], rig[1]
    assert (front.width, front.height) == (400, 225)
    assert front.intrinsic[0, 0] == pytest.approx(316.6) and front.intrinsic[0, 2] == pytest.approx(204.075)
    r = front.rotation_matrix
    assert np.allclose(r @ [0, 0, 1], [1, 0, 0])  # optical axis = ego forward
    assert np.allclose(r @ [1, 0, 0], [0, -1, 0])  # image right = ego right
    assert np.allclose(r @ [0, 1, 0], [0, 0, -1])  # image down = ego down
    yaw = np.degrees(np.arctan2(*(fr.rotation_matrix @ [0, 0, 1])[[1, 0]]))
    assert yaw == pytest.approx(-55.0)
    lidar = rig[6]
    assert np.allclose(lidar.rotation, [np.sqrt(0.5), 0, 0, -np.sqrt(0.5)])
    q = np.array([0.3, -0.5, 0.1, 0.8]) / np.linalg.norm([0.3, -0.5, 0.1, 0.8])
    assert np.allclose(matrix_quaternion(quaternion_matrix(q)), q)


def _one_actor_geom(name: str, xy, yaw: float):
    a = Actor(name, OBJECT_CLASSES[name].size_wlh, np.array(xy, dtype=float), np.zeros(2), yaw)
    return a, frame_geometry(PartTable([a]), np.array([xy], dtype=float), np.array([True]), [])


def test_renderer_draws_a_car_where_the_pinhole_model_puts_it():
    city = City('boston-seaport')
    cam = CameraRenderer(build_rig(0.25)[0])
    ego = np.array([300.0, 244.0 - 1.75])
    car, geom = _one_actor_geom('car', (ego[0] + 15.0, ego[1]), 0.0)
    frame = cam.render(city, geom, ego, 0.0, sun_direction(0.0, 0.8))
    # Box centre (15 m ahead of the ego, 0.865 m high): camera at x=1.70, y=0.02, z=1.51 (ego frame).
    depth, right, down = 15.0 - 1.70, 0.02, 1.51 - 1.73 / 2
    u = 316.6 * right / depth + 204.075
    v = 316.6 * down / depth + 491.5 * 0.25
    assert frame.ids[int(round(v)), int(round(u))] == 1
    assert frame.visible[1] == frame.alone[1] > 100
    px = frame.image[int(round(v)), int(round(u))].astype(float)
    assert px[0] > 2 * px[1] and px[0] > 2 * px[2]  # the car's red body
    # The car's footprint: 4.62 m long seen from behind -> width 1.95 m spans 316.6 * 1.95 / 12.99 ~ 47.5 px.
    cols = np.nonzero((frame.ids == 1).any(0))[0]
    assert cols.max() - cols.min() + 1 == pytest.approx(316.6 * 1.95 / (15.0 - 2.31 - 1.70), abs=3)


def test_lidar_hits_the_facing_side_of_a_box_and_the_ground():
    city = City('boston-seaport')
    sensor = build_rig(0.25)[6]
    lidar = LidarSimulator(sensor, n_azimuth=720)
    ego = np.array([300.0, 244.0 - 1.75])
    bus, geom = _one_actor_geom('bus', (ego[0] + 0.94 + 20.0, ego[1]), 0.0)
    pts = lidar.scan(city, geom, ego, 0.0, np.random.default_rng(0))
    # Lidar frame: y = ego forward. The bus rear face is 20 - 10.5/2 = 14.75 m ahead of the sensor.
    on_bus = (np.abs(pts[:, 0]) < 1.47) & (pts[:, 1] > 10) & (pts[:, 2] > -1.84 + 0.5)
    assert on_bus.sum() > 20
    assert np.allclose(pts[on_bus, 1], 14.75, atol=0.1)
    ground = pts[:, 2] < -1.7
    assert np.allclose(pts[ground, 2], -1.84, atol=0.06)
    assert not ((np.abs(pts[:, 0]) < 1.4) & (pts[:, 1] > 22.0) & (pts[:, 1] < 35.0) & ground).any()  # its shadow
