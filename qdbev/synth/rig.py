"""The sensor rig: six cameras and LIDAR_TOP mounted on the ego car like nuScenes' Renault Zoe.

Frames: ego x forward, y left, z up; camera optical frame x right, y down, z forward; lidar x to the ego's right,
y forward, z up (nuScenes LIDAR_TOP is yawed by -90 deg). Rotations are quaternions [w, x, y, z].
"""
from dataclasses import dataclass
from typing import List, Sequence, Tuple

import numpy as np

FULL_WIDTH, FULL_HEIGHT = 1600, 900  # nuScenes image size the intrinsics below refer to

CAMERA_NAMES: Tuple[str, ...] = ('CAM_FRONT', 'CAM_FRONT_RIGHT', 'CAM_FRONT_LEFT', 'CAM_BACK', 'CAM_BACK_LEFT',
                                 'CAM_BACK_RIGHT')
LIDAR_NAME = 'LIDAR_TOP'

# channel: (translation in the ego frame [m], yaw [deg], focal length at 1600x900 [px])
_CAMERA_MOUNTS = {
    'CAM_FRONT': ((1.70, 0.02, 1.51), 0.0, 1266.4),
    'CAM_FRONT_RIGHT': ((1.55, -0.49, 1.50), -55.0, 1260.8),
    'CAM_FRONT_LEFT': ((1.52, 0.49, 1.51), 55.0, 1272.6),
    'CAM_BACK': ((0.03, 0.0, 1.58), 180.0, 809.2),
    'CAM_BACK_LEFT': ((1.04, 0.48, 1.56), 110.0, 1256.7),
    'CAM_BACK_RIGHT': ((1.04, -0.48, 1.56), -110.0, 1259.5),
}
_PRINCIPAL_POINT = (816.3, 491.5)
LIDAR_TRANSLATION = (0.94, 0.0, 1.84)
LIDAR_YAW_DEG = -90.0


def yaw_quaternion(yaw: float) -> np.ndarray:
    """Quaternion [w, x, y, z] of a rotation by ``yaw`` radians about +z."""
    return np.array([np.cos(yaw / 2.0), 0.0, 0.0, np.sin(yaw / 2.0)])


def quaternion_matrix(q: Sequence[float]) -> np.ndarray:
    """3x3 rotation matrix of a unit quaternion [w, x, y, z]."""
    w, x, y, z = (float(v) for v in q)
    return np.array([[1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)],
                     [2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)],
                     [2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)]])


def matrix_quaternion(r: np.ndarray) -> np.ndarray:
    """Unit quaternion [w, x, y, z] (w >= 0) of a 3x3 rotation matrix."""
    m = np.asarray(r, dtype=np.float64)
    tr = np.trace(m)
    if tr > 0:
        s = 2.0 * np.sqrt(tr + 1.0)
        q = [0.25 * s, (m[2, 1] - m[1, 2]) / s, (m[0, 2] - m[2, 0]) / s, (m[1, 0] - m[0, 1]) / s]
    elif m[0, 0] > m[1, 1] and m[0, 0] > m[2, 2]:
        s = 2.0 * np.sqrt(1.0 + m[0, 0] - m[1, 1] - m[2, 2])
        q = [(m[2, 1] - m[1, 2]) / s, 0.25 * s, (m[0, 1] + m[1, 0]) / s, (m[0, 2] + m[2, 0]) / s]
    elif m[1, 1] > m[2, 2]:
        s = 2.0 * np.sqrt(1.0 + m[1, 1] - m[0, 0] - m[2, 2])
        q = [(m[0, 2] - m[2, 0]) / s, (m[0, 1] + m[1, 0]) / s, 0.25 * s, (m[1, 2] + m[2, 1]) / s]
    else:
        s = 2.0 * np.sqrt(1.0 + m[2, 2] - m[0, 0] - m[1, 1])
        q = [(m[1, 0] - m[0, 1]) / s, (m[0, 2] + m[2, 0]) / s, (m[1, 2] + m[2, 1]) / s, 0.25 * s]
    q = np.array(q)
    q /= np.linalg.norm(q)
    return q if q[0] >= 0 else -q


def camera_to_ego_rotation(yaw: float, pitch: float = 0.0) -> np.ndarray:
    """Rotation [3, 3] from the camera optical frame to the ego frame of a camera looking along ``yaw`` (rad),
    tilted down by ``pitch`` (rad). Columns are the camera x (right), y (down), z (forward) axes in the ego frame."""
    fwd = np.array([np.cos(yaw) * np.cos(pitch), np.sin(yaw) * np.cos(pitch), -np.sin(pitch)])
    right = np.array([np.sin(yaw), -np.cos(yaw), 0.0])
    down = np.cross(fwd, right)
    return np.stack([right, down, fwd], axis=1)


def image_size(scale: float) -> Tuple[int, int]:
    """(width, height) of images at ``scale`` times nuScenes' 1600x900."""
    return int(round(FULL_WIDTH * scale)), int(round(FULL_HEIGHT * scale))


@dataclass(frozen=True)
class Sensor:
    """One calibrated sensor: channel, modality, pose in the ego frame and (cameras) intrinsics and image size."""
    channel: str
    modality: str  # 'camera' | 'lidar'
    translation: np.ndarray  # [3] sensor origin in the ego frame
    rotation: np.ndarray  # [4] quaternion sensor -> ego
    intrinsic: np.ndarray  # [3, 3] (zeros for the lidar)
    width: int = 0
    height: int = 0

    @property
    def rotation_matrix(self) -> np.ndarray:
        """[3, 3] sensor -> ego rotation."""
        return quaternion_matrix(self.rotation)


def build_rig(scale: float, jitter: np.ndarray = None) -> List[Sensor]:
    """The six cameras (in CAMERA_NAMES order) and LIDAR_TOP, cameras at ``scale`` x 1600x900.

    Args:
        scale: image scale; intrinsics are nuScenes' 1600x900 ones multiplied by it (principal point too).
        jitter: optional ``[7, 4]`` per-sensor calibration noise (dx, dy, dz in m; dyaw in rad), as the
            calibration of each nuScenes log differs slightly.
    """
    width, height = image_size(scale)
    sx, sy = width / FULL_WIDTH, height / FULL_HEIGHT
    jitter = np.zeros((7, 4)) if jitter is None else np.asarray(jitter, dtype=np.float64)
    sensors = []
    for i, name in enumerate(CAMERA_NAMES):
        t, yaw_deg, focal = _CAMERA_MOUNTS[name]
        k = np.array([[focal * sx, 0.0, _PRINCIPAL_POINT[0] * sx],
                      [0.0, focal * sy, _PRINCIPAL_POINT[1] * sy],
                      [0.0, 0.0, 1.0]])
        rot = camera_to_ego_rotation(np.deg2rad(yaw_deg) + jitter[i, 3])
        sensors.append(Sensor(name, 'camera', np.asarray(t, dtype=np.float64) + jitter[i, :3],
                              matrix_quaternion(rot), k, width, height))
    lidar_rot = yaw_quaternion(np.deg2rad(LIDAR_YAW_DEG) + jitter[6, 3])
    sensors.append(Sensor(LIDAR_NAME, 'lidar', np.asarray(LIDAR_TRANSLATION, dtype=np.float64) + jitter[6, :3],
                          lidar_rot, np.zeros((3, 3))))
    return sensors
