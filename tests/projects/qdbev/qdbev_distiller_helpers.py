"""Helpers of the distiller tests: a small BEVFormer config, interface-shaped batches, a hand-made camera rig."""
import copy
import os

import numpy as np
import torch

from qdbev.geometry import RING_YAWS_DEG as CAM_YAWS
from qdbev.geometry import pose_can_bus as can_bus
from qdbev.geometry import ring_lidar2img

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
NANO_MODEL = os.path.join(ROOT, 'configs/bevformer/_base_/models/bevformer_nano.py')
H, W = 64, 96  # tiny images keep the tests fast (feature maps 4 x 6 at stride 16)
N_CAM = 6
BEV = 16  # BEV grid of the test model (16 x 16 cells of 6.4 m)


def rig_lidar2img(height: int = H, width: int = W) -> np.ndarray:
    """Six pinhole cameras at the lidar origin looking along CAM_YAWS (from +x towards +y), 90 deg horizontal FOV."""
    return ring_lidar2img(height, width, CAM_YAWS)


def make_sample(scene: str, frame_idx: int, pose=(0.0, 0.0, 0.0), queue=()):
    from mmdet3d.structures import Det3DDataSample, LiDARInstance3DBoxes
    from mmengine.structures import InstanceData
    l2i = rig_lidar2img()
    metas = [dict(lidar2img=l2i, can_bus=can_bus(*p), scene_token=s, frame_idx=f, img_shape=(H, W))
             for s, f, p in queue]
    sample = Det3DDataSample(metainfo=dict(
        sample_idx=frame_idx, token=f'{scene}-{frame_idx}', scene_token=scene, frame_idx=frame_idx, lidar2img=l2i,
        img_shape=(H, W), can_bus=can_bus(*pose), num_cams=N_CAM, box_type_3d=LiDARInstance3DBoxes,
        queue_metas=metas))
    gt = InstanceData()
    gt.bboxes_3d = LiDARInstance3DBoxes(torch.tensor([[10.0, 0.5, -1.8, 4.5, 1.9, 1.6, 0.3, 2.0, 0.0],
                                                      [2.0, 8.0, -1.8, 0.6, 0.7, 1.8, 1.2, 0.0, 1.0]]), box_dim=9)
    gt.labels_3d = torch.tensor([0, 8])
    sample.gt_instances_3d = gt
    return sample


def raw_batch(seed: int = 0, batch: int = 1, queue: int = 2) -> dict:
    """What the dataloader yields: per sample ``[T*N, 3, H, W]`` images and a Det3DDataSample."""
    g = torch.Generator().manual_seed(seed)
    images, samples = [], []
    for b in range(batch):
        images.append(torch.rand(queue * N_CAM, 3, H, W, generator=g) * 255)
        prev = [('scene-a', 2 + k, (0.5 * k, 0.0, 8.0 + k)) for k in range(queue - 1)]
        samples.append(make_sample('scene-a', 2 + queue - 1 + b, (2.0, 0.5, 10.0), queue=prev))
    return dict(inputs=dict(img=images), data_samples=samples)


def model_cfg(**overrides) -> dict:
    """The BEVFormer-nano model dict, shrunk further (dropout 0 so eval/train forwards agree on the head)."""
    from mmengine.config import Config
    full = Config.fromfile(NANO_MODEL)
    head = full.model.pts_bbox_head
    head.num_query = 30
    head.bev_h = head.bev_w = BEV
    head.positional_encoding.row_num_embed = head.positional_encoding.col_num_embed = BEV
    head.transformer.encoder.num_layers = 1
    head.transformer.decoder.num_layers = 2
    head.transformer.encoder.layer_cfg.ffn_cfg.ffn_drop = 0.0
    head.transformer.decoder.layer_cfg.ffn_cfg.ffn_drop = 0.0
    head.transformer.decoder.layer_cfg.self_attn_cfg.dropout = 0.0
    if overrides:
        full.merge_from_dict({f'model.{k}': v for k, v in overrides.items()})
    return full.model.to_dict()


W4A6 = dict(w_bits=4, a_bits=6, w_observer='minmax', a_observer='minmax', per_channel=True,
            stages=dict(backbone=['img_backbone'], neck=['img_neck'], encoder=['pts_bbox_head.transformer.encoder'],
                        decoder=['pts_bbox_head']))


def build_distiller(arch, ckpt, **kwargs):
    from mmdet3d.registry import MODELS
    cfg = dict(type='QDBEVDistiller', architecture=copy.deepcopy(arch), teacher_checkpoint=ckpt)
    cfg.update(kwargs)
    model = MODELS.build(cfg)
    if ckpt is not None:
        model.init_weights()
    return model
