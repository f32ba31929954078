"""The one place that owns BEVFormer's temporal logic.

The data pipeline supplies ABSOLUTE per-frame can_bus vectors (18 floats: [0:3] ego2global translation,
[3:7] rotation quaternion, [7:10] accel, [10:13] rotation rate, [13:16] velocity, [16] yaw rad, [17] yaw deg) and
scene tokens. BEVFormer's network consumes *deltas*: ``can_bus[:3] -= previous position`` and
``can_bus[-1] -= previous yaw (deg)``, both zeroed when there is no previous BEV (scene start). This module
makes those deltas

* for the temporal queue at train time (:meth:`TemporalState.queue`, what BEVFormer's ``union2one`` did in the
  dataset), and
* across ``predict`` calls at test time (:meth:`TemporalState.step` / :meth:`TemporalState.update`, what
  BEVFormer's ``forward_test`` did with ``prev_frame_info``),

and decides whether a previous BEV exists (same scene token as the previous frame).
"""
from typing import List, Optional, Sequence, Tuple

import numpy as np
from torch import Tensor

CAN_BUS_DIM = 18


def check_can_bus(can_bus, where: str) -> np.ndarray:
    """``can_bus`` as a float64 ``[18]`` array, or a ValueError naming ``where`` it came from."""
    arr = np.asarray(can_bus, dtype=np.float64).reshape(-1)
    if arr.shape[0] != CAN_BUS_DIM or not np.all(np.isfinite(arr)):
        raise ValueError(f'{where}: can_bus must be 18 finite floats (BEVFormer convention, absolute), got '
                         f'shape {np.shape(can_bus)}; regenerate the infos with tools/create_data.py')
    return arr


def can_bus_delta(can_bus: np.ndarray, prev_can_bus: Optional[np.ndarray]) -> np.ndarray:
    """BEVFormer's relative can_bus: ``[:3]`` and ``[-1]`` become differences to the previous frame, or zero
    when there is no previous frame (``prev_can_bus`` None). Other entries stay absolute. Returns a new array."""
    out = np.array(can_bus, dtype=np.float64, copy=True)
    if prev_can_bus is None:
        out[:3] = 0.0
        out[-1] = 0.0
    else:
        out[:3] -= prev_can_bus[:3]
        out[-1] -= prev_can_bus[-1]
    return out


class TemporalState:
    """Temporal bookkeeping of one BEVFormer detector (test-time memory + train-time queue deltas).

    Test time (``predict`` of consecutive frames, batch processed sample by sample)::

        delta, prev_bev = state.step(scene_token, can_bus_abs)   # prev_bev None at a scene start
        ... run the model with delta / prev_bev, get bev ...
        state.update(bev)
    """

    def __init__(self) -> None:
        self.scene_token: Optional[str] = None
        self.prev_bev: Optional[Tensor] = None
        self.prev_can_bus: Optional[np.ndarray] = None
        self.frame_idx: Optional[int] = None
        self._pending: Optional[np.ndarray] = None

    def reset(self) -> None:
        """Forget everything (a new sequence starts)."""
        self.__init__()

    @staticmethod
    def queue(can_buses: Sequence[np.ndarray], scene_tokens: Sequence[str]) -> Tuple[List[np.ndarray], List[bool]]:
        """Deltas and previous-BEV flags of a train-time queue, frames oldest first.

        Frame ``t`` has a previous BEV iff ``t > 0`` and its scene token equals frame ``t-1``'s.
        Returns ``(deltas, prev_exists)``, each of length T.
        """
        if len(can_buses) != len(scene_tokens):
            raise ValueError(f'TemporalState.queue: {len(can_buses)} can_bus vectors but {len(scene_tokens)} '
                             f'scene tokens')
        deltas, exists = [], []
        prev, prev_scene = None, None
        for t, (cb, scene) in enumerate(zip(can_buses, scene_tokens)):
            cb = check_can_bus(cb, f'queue frame {t}')
            has_prev = prev is not None and scene == prev_scene
            deltas.append(can_bus_delta(cb, prev if has_prev else None))
            exists.append(has_prev)
            prev, prev_scene = cb, scene
        return deltas, exists

    def step(self, scene_token: str, can_bus: np.ndarray, use_temporal: bool = True,
             frame_idx: Optional[int] = None) -> Tuple[np.ndarray, Optional[Tensor]]:
        """Start a test-time frame: returns its can_bus delta and the previous BEV (None at a scene start, when
        ``use_temporal`` is False, or when ``frame_idx`` does not increase, i.e. the sequence restarted).
        Call :meth:`update` with the frame's BEV afterwards."""
        can_bus = check_can_bus(can_bus, f'sample of scene {scene_token}')
        restarted = (frame_idx is not None and self.frame_idx is not None and int(frame_idx) <= self.frame_idx)
        if scene_token != self.scene_token or not use_temporal or restarted:
            self.prev_bev = None
        self.scene_token = scene_token
        self.frame_idx = None if frame_idx is None else int(frame_idx)
        has_prev = self.prev_bev is not None
        delta = can_bus_delta(can_bus, self.prev_can_bus if has_prev else None)
        self._pending = can_bus
        return delta, self.prev_bev

    def update(self, bev: Tensor) -> None:
        """Remember the BEV ``[1, HW, C]`` (or ``[HW, C]``) of the frame started by the last :meth:`step`."""
        if self._pending is None:
            raise RuntimeError('TemporalState.update called without a preceding step()')
        self.prev_bev = bev.detach()
        self.prev_can_bus = self._pending
        self._pending = None
