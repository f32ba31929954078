"""The BEV grid geometry of the student and the view masks of the current frame (``M_bev``, QD-BEV Eq. 5)."""
from dataclasses import dataclass
from typing import Optional, Sequence, Tuple

import numpy as np
import torch
from torch import Tensor, nn

from qdbev.distill import view_masks


@dataclass(frozen=True)
class BEVGeometry:
    """``bev_h`` rows (along y) x ``bev_w`` columns (along x) over ``pc_range``, ``num_points_in_pillar`` heights."""
    bev_h: int
    bev_w: int
    pc_range: Tuple[float, ...]
    num_points_in_pillar: int = 4

    def __post_init__(self) -> None:
        if len(self.pc_range) != 6 or min(self.bev_h, self.bev_w, self.num_points_in_pillar) <= 0:
            raise ValueError(f'model.bev_geometry: need bev_h, bev_w, num_points_in_pillar > 0 and a 6-value '
                             f'pc_range, got {self}')

    @classmethod
    def from_config(cls, cfg: dict) -> 'BEVGeometry':
        """From ``dict(bev_h=, bev_w=, pc_range=, num_points_in_pillar=)`` (the config's ``bev_geometry``)."""
        try:
            return cls(int(cfg['bev_h']), int(cfg['bev_w']), tuple(float(v) for v in cfg['pc_range']),
                       int(cfg.get('num_points_in_pillar', 4)))
        except (KeyError, TypeError) as err:
            raise ValueError(f'model.bev_geometry needs bev_h, bev_w, pc_range (and num_points_in_pillar), '
                             f'got {cfg!r} ({err})') from None

    @classmethod
    def from_modules(cls, head: nn.Module, encoder: nn.Module) -> 'BEVGeometry':
        """From a BEVFormer head (``bev_h``, ``bev_w``) and its encoder (``pc_range``, ``num_points_in_pillar``)."""
        wanted = ((head, ('bev_h', 'bev_w')), (encoder, ('pc_range', 'num_points_in_pillar')))
        missing = [f'{type(m).__name__}.{a}' for m, attrs in wanted for a in attrs if not hasattr(m, a)]
        if missing:
            raise ValueError(f'model.bev_geometry is not set and the student lacks {missing}; give '
                             f'bev_geometry=dict(bev_h=, bev_w=, pc_range=, num_points_in_pillar=) in the config')
        return cls(int(head.bev_h), int(head.bev_w), tuple(float(v) for v in encoder.pc_range),
                   int(encoder.num_points_in_pillar))

    @property
    def cells(self) -> int:
        """BEV cells of the grid, ``bev_h * bev_w``."""
        return self.bev_h * self.bev_w

    @property
    def z_span(self) -> float:
        return self.pc_range[5] - self.pc_range[2]

    def masks(self, lidar2img: Tensor, pad_shape: Sequence[int]) -> Tensor:
        """``M_bev`` (QD-BEV Eq. 5) ``BoolTensor[N_cam, B, bev_h*bev_w]`` for ``lidar2img`` ``[B, N_cam, 4, 4]`` of
        the padded input ``pad_shape`` (H, W); pillar heights as the BEVFormer encoder samples them (z_span), so the
        masks equal the encoder's own ``bev_mask`` reduced over height."""
        return view_masks(lidar2img, tuple(int(v) for v in pad_shape), self.bev_h, self.bev_w, self.pc_range,
                          self.num_points_in_pillar, z_span=self.z_span)


def current_lidar2img(data_samples: Sequence, device: Optional[torch.device] = None) -> Tensor:
    """The current frame's ``lidar2img`` of every sample (metainfo, for the resized image), ``[B, N_cam, 4, 4]``."""
    mats = []
    for i, sample in enumerate(data_samples):
        if 'lidar2img' not in sample.metainfo:
            raise KeyError(f"QDBEVDistiller: data sample {i} has no metainfo 'lidar2img'; pack it in the pipeline "
                           f'(Pack3DDetInputs meta_keys) as the qdbev interface requires')
        mats.append(np.asarray(sample.metainfo['lidar2img'], dtype=np.float32))
    if len({m.shape for m in mats}) != 1 or mats[0].ndim != 3 or mats[0].shape[1:] != (4, 4):
        raise ValueError(f"QDBEVDistiller: metainfo 'lidar2img' must be [N_cam, 4, 4] with the same N_cam in the "
                         f'batch, got {[m.shape for m in mats]}')
    return torch.as_tensor(np.stack(mats), device=device)
