"""BEVFormer's 10-number box code and its NMS-free decoder.

Regression target layout (mmdet3d 1.x LiDAR boxes ``[x, y, z_gravity, l, w, h, yaw, vx, vy]``)::

    code = [cx, cy, log(l), log(w), cz, log(h), sin(yaw), cos(yaw), vx, vy]

Official BEVFormer was trained on mmdet3d 0.17, whose LiDAR boxes were ``[x, y, z, w, l, h, yaw_old]`` with
``yaw_old = -yaw - pi/2``; its code was ``[cx, cy, log(w), log(l), cz, log(h), sin(yaw_old), cos(yaw_old), vx, vy]``.
The two layouts map exactly onto each other: slots 2 and 3 swap, and ``sin(yaw) = -cos(yaw_old)``,
``cos(yaw) = -sin(yaw_old)`` (``tools/convert_bevformer_ckpt.py`` applies this to the last layer of every
regression branch). Centre slots 0, 1, 4 and velocities are the same in both.
"""
from typing import Dict, List, Optional, Sequence

import torch
from mmdet3d.registry import TASK_UTILS
from torch import Tensor

from qdbev.device_constants import device_constant

# old (mmdet3d 0.17) code slot feeding each new slot, and its sign: new[i] = sign[i] * old[OLD_SLOT[i]]
OLD_SLOT = (0, 1, 3, 2, 4, 5, 7, 6, 8, 9)
OLD_SIGN = (1.0, 1.0, 1.0, 1.0, 1.0, 1.0, -1.0, -1.0, 1.0, 1.0)


def normalize_bbox(bboxes: Tensor) -> Tensor:
    """Boxes ``[N, 7 or 9]`` (x, y, z_gravity, l, w, h, yaw[, vx, vy]) -> codes ``[N, 8 or 10]`` (see module doc)."""
    cx, cy, cz = bboxes[..., 0:1], bboxes[..., 1:2], bboxes[..., 2:3]
    dims = bboxes[..., 3:6].log()
    rot = bboxes[..., 6:7]
    parts = [cx, cy, dims[..., 0:1], dims[..., 1:2], cz, dims[..., 2:3], rot.sin(), rot.cos()]
    if bboxes.size(-1) > 7:
        parts.append(bboxes[..., 7:9])
    return torch.cat(parts, dim=-1)


def denormalize_bbox(codes: Tensor) -> Tensor:
    """Codes ``[N, 8 or 10]`` -> boxes ``[N, 7 or 9]`` (x, y, z_gravity, l, w, h, yaw[, vx, vy])."""
    rot = torch.atan2(codes[..., 6:7], codes[..., 7:8])
    parts = [codes[..., 0:2], codes[..., 4:5], codes[..., 2:4].exp(), codes[..., 5:6].exp(), rot]
    if codes.size(-1) > 8:
        parts.append(codes[..., 8:10])
    return torch.cat(parts, dim=-1)


@TASK_UTILS.register_module()
class NMSFreeCoder:
    """BEVFormer's decoder of the last decoder layer's outputs: top-``max_num`` (query, class) pairs by sigmoid
    score, boxes kept when their centre lies in ``post_center_range`` (and above ``score_threshold`` if set).

    Args:
        pc_range: ``[x_min, y_min, z_min, x_max, y_max, z_max]`` (kept for config compatibility).
        post_center_range: centre limits ``[x_min, y_min, z_min, x_max, y_max, z_max]``.
        max_num: boxes kept per sample (BEVFormer: 300). num_classes: number of classes.
        score_threshold: None (BEVFormer) keeps all top-k boxes.
    """

    def __init__(self, pc_range: Sequence[float], post_center_range: Optional[Sequence[float]] = None,
                 max_num: int = 100, score_threshold: Optional[float] = None, num_classes: int = 10,
                 voxel_size: Optional[Sequence[float]] = None) -> None:
        self.pc_range = list(pc_range)
        self.post_center_range = None if post_center_range is None else list(post_center_range)
        self.max_num = max_num
        self.score_threshold = score_threshold
        self.num_classes = num_classes

    def decode_single(self, cls_scores: Tensor, bbox_preds: Tensor) -> Dict[str, Tensor]:
        """``cls_scores`` ``[Q, num_classes]`` logits, ``bbox_preds`` ``[Q, 10]`` codes -> dict with ``bboxes``
        ``[K, 9]`` (gravity-centre z), ``scores`` ``[K]``, ``labels`` ``[K]``."""
        scores = cls_scores.sigmoid().reshape(-1)
        k = min(self.max_num, scores.numel())
        scores, index = scores.topk(k)
        labels = index % self.num_classes
        boxes = denormalize_bbox(bbox_preds[index // self.num_classes])
        keep = torch.ones_like(scores, dtype=torch.bool)
        if self.score_threshold is not None:
            keep &= scores > self.score_threshold
        if self.post_center_range is not None:
            rng = device_constant(self.post_center_range, boxes.dtype, boxes.device)
            keep &= (boxes[:, :3] >= rng[:3]).all(1) & (boxes[:, :3] <= rng[3:]).all(1)
        return dict(bboxes=boxes[keep], scores=scores[keep], labels=labels[keep])

    def decode(self, all_cls_scores: Tensor, all_bbox_preds: Tensor) -> List[Dict[str, Tensor]]:
        """Decode the LAST decoder layer: ``all_cls_scores`` ``[L, B, Q, num_classes]``, ``all_bbox_preds``
        ``[L, B, Q, 10]`` -> one dict per sample."""
        cls, reg = all_cls_scores[-1], all_bbox_preds[-1]
        return [self.decode_single(cls[i], reg[i]) for i in range(cls.size(0))]
