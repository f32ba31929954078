"""Reading a BEVFormer or QD-BEV model config (plain dicts, no model built): the detector, its BEV grid, its padding.

Shared by the tools that work from a config's numbers alone (hit_lists.py, visualize_view_masks.py, model_size.py).
"""
import math
from typing import Sequence, Tuple

DISTILLER_PREFIX = 'model.architecture.'


def detector_config(model) -> Tuple[dict, str]:
    """The detector's config of ``model`` (a QD-BEV distiller's ``architecture``, else ``model`` itself) and the
    ``--cfg-options`` prefix of its keys (``model.architecture.`` / ``model.``)."""
    if 'architecture' in model:
        return model['architecture'], DISTILLER_PREFIX
    return model, 'model.'


def bev_grid(detector) -> dict:
    """``dict(bev_h, bev_w, pc_range, num_points_in_pillar)`` of a BEVFormer detector config (the head's BEV size,
    the encoder's range and pillar heights; BEVFormer's default of 4 heights); KeyError / TypeError when the config
    is not a BEVFormer one."""
    head = detector['pts_bbox_head']
    encoder = head['transformer']['encoder']
    return dict(bev_h=int(head['bev_h']), bev_w=int(head['bev_w']), pc_range=[float(v) for v in encoder['pc_range']],
                num_points_in_pillar=int(encoder.get('num_points_in_pillar', 4)))


def pad_divisor(detector) -> int:
    """The data preprocessor's ``pad_size_divisor`` (Det3DDataPreprocessor's default when unset: 1)."""
    return int((detector.get('data_preprocessor') or {}).get('pad_size_divisor', 1) or 1)


def padded_shape(height_width: Sequence[int], divisor: int) -> Tuple[int, int]:
    """``(H, W)`` rounded up to multiples of ``divisor``, as the data preprocessor pads the images."""
    return tuple(int(math.ceil(int(v) / divisor) * divisor) for v in height_width)
