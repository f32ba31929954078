"""Devkit evaluation of box lists through mmdet3d's ``NuScenesMetric`` (the real nuscenes-devkit detection eval).

Used by the tools that evaluate something other than a model's forward pass: ground truth fed back as
predictions (a check of the data set, the infos and the evaluator together), jittered ground truth, and
exported prediction lists.
"""
import os.path as osp
import pickle
from typing import Dict, List, Sequence

import numpy as np
import torch

NDS_KEY = 'pred_instances_3d_NuScenes/NDS'
MAP_KEY = 'pred_instances_3d_NuScenes/mAP'


def load_infos(ann_file: str) -> dict:
    if not osp.isfile(ann_file):
        raise FileNotFoundError(f'{ann_file}: info file not found; build it with tools/create_data.py')
    with open(ann_file, 'rb') as f:
        return pickle.load(f)


def ground_truth_results(ann_file: str, data_root: str) -> List[dict]:
    """Ground-truth boxes of every sample of ``ann_file`` shaped as model outputs for ``NuScenesMetric``:
    ``[{'sample_idx', 'pred_instances_3d': {bboxes_3d, scores_3d, labels_3d}}]``, parsed by mmdet3d's own
    ``NuScenesDataset`` (LiDAR boxes with velocity, box_dim 9)."""
    from mmdet3d.datasets import NuScenesDataset
    from mmdet3d.structures import LiDARInstance3DBoxes
    ds = NuScenesDataset(data_root=osp.abspath(data_root), ann_file=osp.abspath(ann_file), pipeline=[],
                         filter_empty_gt=False, modality=dict(use_camera=True, use_lidar=False), with_velocity=True,
                         serialize_data=False)
    results = []
    for i in range(len(ds)):
        info = ds.get_data_info(i)
        ann = info['ann_info']
        keep = ann['gt_labels_3d'] >= 0
        boxes = ann['gt_bboxes_3d'][torch.from_numpy(keep)] if len(keep) else ann['gt_bboxes_3d']
        boxes = LiDARInstance3DBoxes(boxes.tensor.clone(), box_dim=9)
        labels = torch.as_tensor(ann['gt_labels_3d'][keep], dtype=torch.long)
        results.append(dict(sample_idx=info['sample_idx'],
                            pred_instances_3d=dict(bboxes_3d=boxes, scores_3d=torch.ones(len(labels)),
                                                   labels_3d=labels)))
    return results


def jitter_results(results: Sequence[dict], magnitude: float, seed: int = 0) -> List[dict]:
    """Perturb boxes by ``magnitude``: centre += m*z (metres), yaw += m/4*z, sizes *= exp(m/10*z),
    velocity += m*z, with z ~ N(0, 1) drawn once per box from ``seed`` so a larger magnitude is a strictly larger
    error of the same direction."""
    from mmdet3d.structures import LiDARInstance3DBoxes
    gen = torch.Generator().manual_seed(seed)
    out = []
    for res in results:
        pred = res['pred_instances_3d']
        t = pred['bboxes_3d'].tensor.clone()
        z = torch.randn(t.shape, generator=gen, dtype=t.dtype)
        t[:, 0:3] += magnitude * z[:, 0:3]
        t[:, 3:6] *= torch.exp(magnitude / 10 * z[:, 3:6])
        t[:, 6] += magnitude / 4 * z[:, 6]
        t[:, 7:9] += magnitude * z[:, 7:9]
        out.append(dict(sample_idx=res['sample_idx'],
                        pred_instances_3d=dict(bboxes_3d=LiDARInstance3DBoxes(t, box_dim=9),
                                               scores_3d=pred['scores_3d'].clone(),
                                               labels_3d=pred['labels_3d'].clone())))
    return out


def evaluate_results(results: List[dict], ann_file: str, data_root: str, out_dir: str) -> Dict[str, float]:
    """Run ``NuScenesMetric`` (nuscenes-devkit DetectionEval) on ``results``; returns its metric dict (keys
    ``pred_instances_3d_NuScenes/NDS``, ``.../mAP``, per-class APs and TP errors). The devkit's
    ``metrics_summary.json`` is left in ``out_dir/pred_instances_3d``."""
    from mmdet3d.evaluation.metrics import NuScenesMetric
    infos = load_infos(ann_file)
    meta = infos['metainfo']
    classes = tuple(sorted(meta['categories'], key=meta['categories'].get))
    classes = tuple(c for c in classes if meta['categories'][c] >= 0)
    metric = NuScenesMetric(data_root=data_root, ann_file=ann_file, metric='bbox', jsonfile_prefix=out_dir)
    metric.dataset_meta = dict(classes=classes, version=meta['version'])
    return metric.compute_metrics(list(results))


def summarize(metrics: Dict[str, float]) -> Dict[str, float]:
    """NDS, mAP and the five TP errors from a ``NuScenesMetric`` dict."""
    keys = dict(nds=NDS_KEY, map=MAP_KEY)
    for err in ('mATE', 'mASE', 'mAOE', 'mAVE', 'mAAE'):
        keys[err] = f'pred_instances_3d_NuScenes/{err}'
    return {k: float(np.round(metrics[v], 4)) for k, v in keys.items() if v in metrics}
