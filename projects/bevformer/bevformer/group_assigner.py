"""mmdet's ``HungarianAssigner`` for Group DETR's query groups (registered in mmdet's TASK_UTILS).

Use it in a config as ``dict(type='mmdet.GroupHungarianAssigner', match_costs=[...])`` (the same match costs as
``mmdet.HungarianAssigner``) with ``BEVFormerHead(num_query_groups=G)``.
"""
from typing import Optional

import torch
from mmdet.models.task_modules.assigners import AssignResult, HungarianAssigner
from mmdet.registry import TASK_UTILS
from mmengine.structures import InstanceData
from scipy.optimize import linear_sum_assignment


@TASK_UTILS.register_module()
class GroupHungarianAssigner(HungarianAssigner):
    """One-to-one matching of each of ``num_groups`` contiguous blocks of predictions to the same ground truth.

    The match costs of all blocks are computed in one call per cost and copied to the host once, then each block
    is solved by ``linear_sum_assignment`` as mmdet's :meth:`HungarianAssigner.assign` solves its one block: the
    result equals ``assign`` called block by block (the costs are per prediction / ground-truth pair), at one
    device-to-host copy per sample instead of one per block. ``num_groups=1`` is mmdet's ``assign`` itself.
    """

    def assign(self, pred_instances: InstanceData, gt_instances: InstanceData, img_meta: Optional[dict] = None,
               num_groups: int = 1, **kwargs) -> AssignResult:
        """``gt_inds`` ``[num_preds]``: 0 background, ``j + 1`` matched to ground truth ``j`` (in every block)."""
        if num_groups == 1:
            return super().assign(pred_instances, gt_instances, img_meta=img_meta, **kwargs)
        num_gts, num_preds = len(gt_instances), len(pred_instances)
        if num_preds % num_groups:
            raise ValueError(f'GroupHungarianAssigner: {num_preds} predictions do not split into {num_groups} groups')
        device = gt_instances.labels.device
        gt_inds = torch.zeros(num_preds, dtype=torch.long)
        labels = torch.full((num_preds, ), -1, dtype=torch.long)
        if num_gts and num_preds:
            cost = torch.stack([match_cost(pred_instances=pred_instances, gt_instances=gt_instances,
                                           img_meta=img_meta) for match_cost in self.match_costs]).sum(dim=0)
            cost = cost.detach().cpu()
            size = num_preds // num_groups
            for g in range(num_groups):
                rows, cols = linear_sum_assignment(cost[g * size:(g + 1) * size])
                gt_inds[g * size + torch.from_numpy(rows)] = torch.from_numpy(cols) + 1
            matched = gt_inds > 0
            labels[matched] = gt_instances.labels.cpu()[gt_inds[matched] - 1]
        return AssignResult(num_gts=num_gts, gt_inds=gt_inds.to(device), max_overlaps=None, labels=labels.to(device))
