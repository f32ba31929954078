"""The BEVFormer detector (mmdet3d 1.x ``Base3DDetector``).

Inputs follow the qdbev data <-> model interface: ``inputs['imgs']`` ``[B, T * N_cam, 3, H, W]`` (normalised and
padded by ``Det3DDataPreprocessor``; the queue's frames oldest first, the current frame last; T = 1 at test time)
and per sample the metainfo of the current frame (``lidar2img``, ``can_bus`` ABSOLUTE, ``scene_token``,
``frame_idx``, ``queue_metas`` for the T - 1 previous frames).

Training: the previous frames run without gradient and in eval mode to build ``prev_bev`` frame by frame
(BEVFormer's ``obtain_history_bev``), then the current frame runs with gradient. Testing: frames are processed
in order and the BEV of each frame is kept for the next frame of the same scene. All can_bus deltas and
previous-BEV decisions come from :class:`TemporalState`.
"""
import contextlib
from typing import Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np
import torch
from mmdet3d.models.detectors import Base3DDetector
from mmdet3d.registry import MODELS
from mmdet3d.structures import Det3DDataSample
from torch import Tensor

from .grid_mask import GridMask
from .temporal_state import TemporalState, can_bus_delta, check_can_bus


def _meta(sample: Det3DDataSample, key: str, where: str):
    if key not in sample.metainfo:
        raise KeyError(f'BEVFormer: data sample metainfo has no "{key}" ({where}); pack it in the pipeline '
                       f'(Pack3DDetInputs meta_keys) as the qdbev interface requires')
    return sample.metainfo[key]


@contextlib.contextmanager
def eval_flags(model: torch.nn.Module) -> Iterator[torch.nn.Module]:
    """``model`` in evaluation mode for the block, each module's own ``training`` flag restored after it.

    The flags are set directly, without ``nn.Module.train``'s walk and attribute checks and the overrides it calls
    (BEVFormer's test-sequence reset, the fake quantizers' cache reset, ResNet's stage freezing), none of which
    changes what an eval-mode forward computes. On BEVFormer-tiny's fake-quantized student (1247 modules) ``eval()``
    and the restore took 12-16 ms of host time (2-core CPU), once per training step for the history frames."""
    modules = list(model.modules())
    flags = [m.training for m in modules]
    try:
        for m in modules:
            m.__dict__['training'] = False
        yield model
    finally:
        for m, flag in zip(modules, flags):
            m.__dict__['training'] = flag


@MODELS.register_module()
class BEVFormer(Base3DDetector):
    """BEVFormer: image backbone + neck, :class:`BEVFormerHead` (BEV encoder, detection decoder).

    Args:
        img_backbone, img_neck: mmdet backbone / neck configs (``mmdet.ResNet``, ``mmdet.FPN``).
        pts_bbox_head: :class:`BEVFormerHead` config (BEVFormer's name).
        use_grid_mask: GridMask on the current frame's images in training.
        video_test_mode: keep the previous BEV across test frames of a scene.
        eval_img_chunk: images per ``img_backbone`` call when it runs in eval mode without autograd (history
            frames, a frozen distillation teacher, testing); the outputs are concatenated before the neck, so the
            numbers are the same and the backbone's transient memory is that of one chunk. None: all at once.
        history_img_batch: the previous frames' images through backbone and neck in one call instead of one frame at
            a time (their encoder passes stay frame by frame; the numbers are the same): fewer calls, with the
            transient memory of all previous frames at once. For a distillation teacher that runs before the
            student (``QDBEVDistiller(teacher_history_batch=True)``), where that transient is freed before the
            student's activations build up.
        train_cfg / test_cfg: ``dict(pts=dict(assigner=...))`` as BEVFormer (or the inner dict directly).
    """

    def __init__(self, img_backbone: dict, pts_bbox_head: dict, img_neck: Optional[dict] = None,
                 use_grid_mask: bool = True, video_test_mode: bool = True, eval_img_chunk: Optional[int] = None,
                 history_img_batch: bool = False, data_preprocessor: Optional[dict] = None,
                 train_cfg: Optional[dict] = None, test_cfg: Optional[dict] = None,
                 init_cfg: Optional[dict] = None) -> None:
        super().__init__(data_preprocessor=data_preprocessor, init_cfg=init_cfg)
        self.img_backbone = MODELS.build(img_backbone)
        self.img_neck = MODELS.build(img_neck) if img_neck is not None else None
        head_train = train_cfg.get('pts', train_cfg) if train_cfg else None
        head_test = test_cfg.get('pts', test_cfg) if test_cfg else None
        self.pts_bbox_head = MODELS.build(dict(pts_bbox_head, train_cfg=head_train, test_cfg=head_test))
        self.use_grid_mask = use_grid_mask
        self.grid_mask = GridMask(True, True, ratio=0.5, mode=1, prob=0.7)
        self.video_test_mode = video_test_mode
        if eval_img_chunk is not None and (not isinstance(eval_img_chunk, int) or eval_img_chunk < 1):
            raise ValueError(f'BEVFormer: eval_img_chunk must be a positive int or None, got {eval_img_chunk!r}')
        self.eval_img_chunk = eval_img_chunk
        if not isinstance(history_img_batch, bool):
            raise ValueError(f'BEVFormer: history_img_batch must be True or False, got {history_img_batch!r}')
        self.history_img_batch = history_img_batch
        self.temporal_state = TemporalState()

    def train(self, mode: bool = True) -> 'BEVFormer':
        """Switching between training and evaluation starts a new test sequence."""
        self.temporal_state.reset()
        return super().train(mode)

    # ------------------------------------------------------------------ features
    def extract_img_feat(self, imgs: Tensor) -> List[Tensor]:
        """``imgs`` ``[B, M, 3, H, W]`` -> neck outputs per level ``[B, M, C, h, w]`` (GridMask in training)."""
        b, m = imgs.shape[:2]
        x = imgs.reshape(b * m, *imgs.shape[2:])
        if self.use_grid_mask:
            x = self.grid_mask(x)
        feats = self._backbone(x)
        if isinstance(feats, dict):
            feats = list(feats.values())
        if self.img_neck is not None:
            feats = self.img_neck(feats)
        return [f.view(b, m, *f.shape[1:]) for f in feats]

    def _backbone(self, x: Tensor):
        """``img_backbone(x)``, in chunks of ``eval_img_chunk`` images when it runs in eval mode without autograd
        (in training mode BatchNorm's batch statistics would depend on the chunking)."""
        chunk = self.eval_img_chunk
        if chunk is None or x.shape[0] <= chunk or torch.is_grad_enabled() or self.img_backbone.training:
            return self.img_backbone(x)
        parts = [self.img_backbone(x[i:i + chunk]) for i in range(0, x.shape[0], chunk)]
        if isinstance(parts[0], dict):
            return {k: torch.cat([p[k] for p in parts]) for k in parts[0]}
        return [torch.cat(level) for level in zip(*parts)]

    def extract_feat(self, batch_inputs_dict: Dict[str, Tensor],
                     batch_data_samples: Optional[List[Det3DDataSample]] = None) -> List[Tensor]:
        """Neck features of the current (last) frame: per level ``[B, N_cam, C, h, w]``."""
        imgs = self._images(batch_inputs_dict)
        n = self._num_cams(batch_data_samples[0]) if batch_data_samples else imgs.shape[1]
        return self.extract_img_feat(imgs[:, -n:])

    @staticmethod
    def _num_cams(sample: Det3DDataSample) -> int:
        meta = sample.metainfo
        if 'num_cams' in meta:
            return int(meta['num_cams'])
        return int(np.asarray(_meta(sample, 'lidar2img', 'camera count')).shape[0])

    def _queue(self, imgs: Tensor, samples: Sequence[Det3DDataSample]
               ) -> Tuple[Tensor, Tensor, Tensor, Tensor, np.ndarray]:
        """Split the packed queue. Returns ``imgs [B, T, N, 3, H, W]``, ``can_bus [T, B, 18]`` deltas,
        ``prev_exists [T, B]`` bool, ``lidar2img [T, B, N, 4, 4]`` and ``prev_exists`` on the host (numpy), which
        the frame loop reads without copying the device tensor back."""
        b, m = imgs.shape[:2]
        n = self._num_cams(samples[0])
        if m % n != 0:
            raise ValueError(f'BEVFormer: {m} images per sample is not a multiple of num_cams={n}')
        t = m // n
        deltas, exists, l2i = [], [], []
        for i, s in enumerate(samples):
            queue = list(s.metainfo.get('queue_metas', []))
            if len(queue) != t - 1:
                raise ValueError(f'BEVFormer: sample {i} has {t} frames of images but {len(queue)} queue_metas '
                                 f'(need T-1 = {t - 1}); check the dataset queue_length and Pack3DDetInputs meta_keys')
            frames = queue + [s.metainfo]
            d, e = TemporalState.queue([f['can_bus'] for f in frames], [f['scene_token'] for f in frames])
            deltas.append(np.stack(d))
            exists.append(e)
            l2i.append(np.stack([np.asarray(f['lidar2img'], dtype=np.float32) for f in frames]))
        device = imgs.device
        can_bus = torch.as_tensor(np.stack(deltas, 1), dtype=torch.float32, device=device)
        exists = np.ascontiguousarray(np.asarray(exists, dtype=bool).T)  # [T, B]
        prev_exists = torch.as_tensor(exists, dtype=torch.bool, device=device)
        lidar2img = torch.as_tensor(np.stack(l2i, 1), dtype=torch.float32, device=device)
        if lidar2img.shape[2] != n:
            raise ValueError(f'BEVFormer: lidar2img has {lidar2img.shape[2]} cameras but num_cams={n}')
        return imgs.view(b, t, n, *imgs.shape[2:]), can_bus, prev_exists, lidar2img, exists

    @torch.no_grad()
    def obtain_history_bev(self, imgs: Tensor, can_bus: Tensor, prev_exists: Tensor, lidar2img: Tensor,
                           pad_shape: Tuple[int, int], exists_host: Optional[np.ndarray] = None
                           ) -> Optional[Tensor]:
        """BEV of the last previous frame, built frame by frame without gradient and in eval mode (the image features
        of all previous frames in one call with ``history_img_batch``).

        Args:
            imgs: ``[B, T', N, 3, H, W]`` previous frames (oldest first). can_bus: ``[T', B, 18]`` deltas.
            prev_exists: ``[T', B]``. lidar2img: ``[T', B, N, 4, 4]``. pad_shape: padded (H, W).
            exists_host: ``prev_exists`` as a numpy array, read instead of the device tensor (no synchronisation).
        Returns:
            ``[B, HW, C]`` or None when there is no previous frame.
        """
        b, tp, n = imgs.shape[:3]
        if tp == 0:
            return None
        prev = None
        with eval_flags(self):
            every = None
            if self.history_img_batch:  # [B, T' * N, ...] frame-major per sample, then per frame [B, N, ...]
                every = [f.view(b, tp, n, *f.shape[2:]) for f in self.extract_img_feat(imgs.flatten(1, 2))]
            for t in range(tp):  # else one frame's images at a time: the transient memory of one frame, not T-1
                feats_t = [f[:, t] for f in every] if every is not None else self.extract_img_feat(imgs[:, t])
                valid = prev_exists[t]
                any_valid = bool(exists_host[t].any()) if exists_host is not None else bool(valid.any())
                prev_in = prev if prev is not None and any_valid else None
                prev = self.pts_bbox_head.get_bev_features(feats_t, can_bus[t], lidar2img[t], pad_shape,
                                                           prev_bev=prev_in, prev_valid=valid)
        return prev

    # ------------------------------------------------------------------ modes
    def loss(self, batch_inputs_dict: Dict[str, Tensor], batch_data_samples: List[Det3DDataSample]
             ) -> Dict[str, Tensor]:
        """Losses of the current (last) frame of each queue; previous frames only provide ``prev_bev``."""
        outs = self.forward_queue(batch_inputs_dict, batch_data_samples)
        gt_boxes = [s.gt_instances_3d.bboxes_3d for s in batch_data_samples]
        gt_labels = [s.gt_instances_3d.labels_3d for s in batch_data_samples]
        return self.pts_bbox_head.loss_by_feat(outs['all_cls_scores'], outs['all_bbox_preds'], gt_boxes, gt_labels)

    def forward_queue(self, batch_inputs_dict: Dict[str, Tensor], batch_data_samples: List[Det3DDataSample],
                      with_head: bool = True) -> Dict[str, Tensor]:
        """The training forward of :meth:`loss` without the losses: head outputs of the current (last) frame of each
        queue (``bev_embed``, ``all_cls_scores``, ``all_bbox_preds``), or with ``with_head=False`` only
        ``bev_embed`` (image features and encoder; what a distillation teacher of image / BEV features needs)."""
        imgs = self._images(batch_inputs_dict)
        pad_shape = tuple(int(v) for v in imgs.shape[-2:])
        queue, can_bus, exists, lidar2img, exists_host = self._queue(imgs, batch_data_samples)
        t = queue.shape[1]
        prev_bev = self.obtain_history_bev(queue[:, :t - 1], can_bus[:t - 1], exists[:t - 1], lidar2img[:t - 1],
                                           pad_shape, exists_host[:t - 1])
        feats = self.extract_img_feat(queue[:, t - 1])
        valid = exists[t - 1]
        prev_bev = prev_bev if prev_bev is not None and bool(exists_host[t - 1].any()) else None
        head = self.pts_bbox_head if with_head else self.pts_bbox_head.get_bev_features
        outs = head(feats, can_bus[t - 1], lidar2img[t - 1], pad_shape, prev_bev=prev_bev, prev_valid=valid)
        return outs if with_head else dict(bev_embed=outs)

    def predict(self, batch_inputs_dict: Dict[str, Tensor], batch_data_samples: List[Det3DDataSample],
                **kwargs) -> List[Det3DDataSample]:
        """Boxes of the current frame of each sample; samples are taken as consecutive frames in batch order."""
        imgs = self._images(batch_inputs_dict)
        pad_shape = tuple(int(v) for v in imgs.shape[-2:])
        n = self._num_cams(batch_data_samples[0])
        feats = self.extract_img_feat(imgs[:, -n:])
        results = []
        for i, sample in enumerate(batch_data_samples):
            meta = sample.metainfo
            delta, prev = self.temporal_state.step(
                _meta(sample, 'scene_token', 'temporal test'), _meta(sample, 'can_bus', 'temporal test'),
                use_temporal=self.video_test_mode, frame_idx=meta.get('frame_idx'))
            lidar2img = torch.as_tensor(np.asarray(_meta(sample, 'lidar2img', 'projection'), dtype=np.float32),
                                        device=imgs.device)[None]
            can_bus = torch.as_tensor(delta, dtype=torch.float32, device=imgs.device)[None]
            valid = torch.ones(1, dtype=torch.bool, device=imgs.device)
            outs = self.pts_bbox_head([f[i:i + 1] for f in feats], can_bus, lidar2img, pad_shape,
                                      prev_bev=prev, prev_valid=valid, last_layer_only=True)
            self.temporal_state.update(outs['bev_embed'])
            results += self.pts_bbox_head.predict_by_feat(outs['all_cls_scores'], outs['all_bbox_preds'])
        return self.add_pred_to_datasample(batch_data_samples, results)

    def _forward(self, batch_inputs_dict: Dict[str, Tensor],
                 batch_data_samples: Optional[List[Det3DDataSample]] = None) -> Dict[str, Tensor]:
        """Head outputs of the current frame without temporal context (``mode='tensor'``)."""
        imgs = self._images(batch_inputs_dict)
        pad_shape = tuple(int(v) for v in imgs.shape[-2:])
        n = self._num_cams(batch_data_samples[0])
        feats = self.extract_img_feat(imgs[:, -n:])
        lidar2img = torch.as_tensor(np.stack([np.asarray(s.metainfo['lidar2img'], dtype=np.float32)
                                              for s in batch_data_samples]), device=imgs.device)
        can_bus = torch.as_tensor(np.stack([can_bus_delta(check_can_bus(s.metainfo['can_bus'], 'tensor mode'), None)
                                            for s in batch_data_samples]), dtype=torch.float32, device=imgs.device)
        return self.pts_bbox_head(feats, can_bus, lidar2img, pad_shape)

    @staticmethod
    def _images(batch_inputs_dict: Dict[str, Tensor]) -> Tensor:
        imgs = batch_inputs_dict.get('imgs', batch_inputs_dict.get('img'))
        if imgs is None or imgs.dim() != 5:
            shape = None if imgs is None else tuple(imgs.shape)
            raise ValueError(f'BEVFormer: inputs need "imgs" [B, T*N_cam, 3, H, W] from Det3DDataPreprocessor, '
                             f'got {shape}')
        return imgs
