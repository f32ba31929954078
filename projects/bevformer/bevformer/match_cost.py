"""BEVFormer's L1 box cost for mmdet's ``HungarianAssigner`` (registered in mmdet's TASK_UTILS).

Use it in a config as ``dict(type='mmdet.BBox3DL1Cost', weight=0.25)`` inside
``dict(type='mmdet.HungarianAssigner', match_costs=[dict(type='mmdet.FocalLossCost', weight=2.0), ...])``.
"""
from typing import Optional, Union

import torch
from mmdet.models.task_modules.assigners.match_cost import BaseMatchCost
from mmdet.registry import TASK_UTILS
from mmengine.structures import InstanceData
from torch import Tensor


@TASK_UTILS.register_module()
class BBox3DL1Cost(BaseMatchCost):
    """L1 distance between box codes: ``cost[i, j] = weight * sum_k |pred_i[k] - gt_j[k]|`` over the first
    ``code_dims`` code entries (BEVFormer: 8, i.e. centre, log-size and yaw sin/cos but not the velocity).

    ``pred_instances.bboxes`` ``[Q, >=code_dims]`` are the head's box codes and ``gt_instances.bboxes``
    ``[G, >=code_dims]`` the ground truth encoded with :func:`~projects.bevformer.bevformer.box_coder.normalize_bbox`.
    """

    def __init__(self, weight: Union[float, int] = 1., code_dims: int = 8) -> None:
        super().__init__(weight=weight)
        self.code_dims = code_dims

    def __call__(self, pred_instances: InstanceData, gt_instances: InstanceData,
                 img_meta: Optional[dict] = None, **kwargs) -> Tensor:
        """Returns the ``[Q, G]`` weighted cost matrix."""
        pred = pred_instances.bboxes[:, :self.code_dims]
        gt = gt_instances.bboxes[:, :self.code_dims].to(pred.dtype)
        return torch.cdist(pred, gt, p=1) * self.weight
